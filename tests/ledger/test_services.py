import pytest
from django.db import connection

from ledger import selectors, services
from ledger.checks import run_checks
from ledger.errors import (
    AlreadyReversed,
    IdempotencyConflict,
    InsufficientBalance,
    InvalidPosting,
    PendingTransferResolved,
    UnbalancedJournal,
)
from ledger.models import Journal, PendingTransferState, Posting
from ledger.services import Leg


def test_user_gets_a_ledger_account_on_creation(make_user):
    user = make_user()
    account = selectors.user_account(user=user)
    assert account.code == f"user:{user.uuid}"
    assert account.kind == "liability" and account.cached and not account.allow_negative
    assert selectors.user_balance_msat(user=user) == 0


def test_deposit_credits_user_and_debits_node(funded, node_account):
    user, _ = funded(5_000)
    assert selectors.user_balance_msat(user=user) == 5_000
    assert selectors.account_balance_msat(account=node_account) == 5_000


def test_same_idempotency_key_posts_once(funded, node_account):
    user, account = funded(1_000)
    again = services.transfer(
        idempotency_key=f"test-deposit:{user.uuid}:1000",
        kind="deposit",
        debit=node_account,
        credit=account,
        amount_msat=1_000,
    )
    assert again.replayed
    assert selectors.user_balance_msat(user=user) == 1_000
    assert Journal.objects.filter(idempotency_key=f"test-deposit:{user.uuid}:1000").count() == 1


def test_same_key_with_other_amount_is_a_conflict(funded, node_account):
    user, account = funded(1_000)
    with pytest.raises(IdempotencyConflict):
        services.transfer(
            idempotency_key=f"test-deposit:{user.uuid}:1000",
            kind="deposit",
            debit=node_account,
            credit=account,
            amount_msat=999,
        )
    assert selectors.user_balance_msat(user=user) == 1_000


def test_overdraft_refused_and_nothing_written(funded):
    (payer, payer_account), (payee, payee_account) = funded(700), funded(0)
    journals_before = Journal.objects.count()
    with pytest.raises(InsufficientBalance) as raised:
        services.transfer(
            idempotency_key="overdraft",
            kind="transfer",
            debit=payer_account,
            credit=payee_account,
            amount_msat=701,
        )
    assert raised.value.details["balance_msat"] == 700
    assert Journal.objects.count() == journals_before
    assert selectors.user_balance_msat(user=payer) == 700
    assert selectors.user_balance_msat(user=payee) == 0


@pytest.mark.parametrize("amount", [0, -5, 1.5, True])
def test_transfer_amount_must_be_positive_integer(funded, amount):
    (_, a), (_, b) = funded(100), funded(0)
    with pytest.raises(InvalidPosting):
        services.transfer(
            idempotency_key=f"bad:{amount}", kind="t", debit=a, credit=b, amount_msat=amount
        )


def test_unbalanced_journal_refused(funded, node_account):
    _, account = funded(0)
    with pytest.raises(UnbalancedJournal):
        services.journal_post(
            idempotency_key="unbalanced",
            kind="x",
            legs=[Leg(node_account, 10), Leg(account, -9)],
        )


def test_two_phase_post_refunds_unused_reserve(funded, node_account, in_flight):
    user, account = funded(10_000)
    services.pending_transfer_reserve(
        key="w:1", kind="withdrawal_reserve", debit=account, holding=in_flight, amount_msat=6_000
    )
    assert selectors.user_balance_msat(user=user) == 4_000
    assert selectors.user_pending_msat(user=user) == 6_000
    pending = services.pending_transfer_post(
        key="w:1", kind="withdrawal_settle", destinations=[(node_account, 5_200)]
    )
    assert pending.state == PendingTransferState.POSTED
    assert selectors.user_balance_msat(user=user) == 4_800
    assert selectors.user_pending_msat(user=user) == 0
    assert selectors.account_balance_msat(account=in_flight) == 0
    # posting again is a no-op; voiding a posted transfer is refused
    services.pending_transfer_post(
        key="w:1", kind="withdrawal_settle", destinations=[(node_account, 5_200)]
    )
    assert selectors.user_balance_msat(user=user) == 4_800
    with pytest.raises(PendingTransferResolved):
        services.pending_transfer_void(key="w:1", kind="withdrawal_refund")


def test_two_phase_void_refunds_everything(funded, in_flight, node_account):
    user, account = funded(3_000)
    services.pending_transfer_reserve(
        key="w:2", kind="withdrawal_reserve", debit=account, holding=in_flight, amount_msat=3_000
    )
    services.pending_transfer_void(key="w:2", kind="withdrawal_refund")
    services.pending_transfer_void(key="w:2", kind="withdrawal_refund")
    assert selectors.user_balance_msat(user=user) == 3_000
    with pytest.raises(PendingTransferResolved):
        services.pending_transfer_post(key="w:2", kind="s", destinations=[(node_account, 1)])


def test_post_cannot_exceed_reservation(funded, in_flight, node_account):
    _, account = funded(3_000)
    services.pending_transfer_reserve(
        key="w:3", kind="withdrawal_reserve", debit=account, holding=in_flight, amount_msat=1_000
    )
    with pytest.raises(InvalidPosting):
        services.pending_transfer_post(key="w:3", kind="s", destinations=[(node_account, 1_001)])


def test_reversal_restores_balances_once(funded):
    (a, a_account), (b, b_account) = funded(1_000), funded(0)
    journal = services.transfer(
        idempotency_key="pay", kind="transfer", debit=a_account, credit=b_account, amount_msat=400
    )
    services.journal_reverse(journal=journal, memo="refund")
    assert selectors.user_balance_msat(user=a) == 1_000
    assert selectors.user_balance_msat(user=b) == 0
    with pytest.raises(AlreadyReversed):
        services.journal_reverse(journal=journal, idempotency_key="another-key")


def test_reversal_that_would_overdraw_is_refused(funded):
    (_, a_account), (_, b_account) = funded(1_000), funded(0)
    journal = services.transfer(
        idempotency_key="pay2", kind="transfer", debit=a_account, credit=b_account, amount_msat=400
    )
    services.transfer(
        idempotency_key="spend", kind="transfer", debit=b_account, credit=a_account, amount_msat=300
    )
    with pytest.raises(InsufficientBalance):
        services.journal_reverse(journal=journal)


def test_statement_running_balance_and_keyset_pages(funded, node_account):
    _, account = funded(0)
    for index in range(1, 8):
        services.transfer(
            idempotency_key=f"s:{index}",
            kind="deposit",
            debit=node_account,
            credit=account,
            amount_msat=index * 100,
        )
    first = selectors.account_statement(account=account, limit=3)
    assert [line.amount_msat for line in first.lines] == [700, 600, 500]
    assert [line.balance_after_msat for line in first.lines] == [2800, 2100, 1500]
    second = selectors.account_statement(account=account, before=first.next_cursor, limit=3)
    assert [line.amount_msat for line in second.lines] == [400, 300, 200]
    last = selectors.account_statement(account=account, before=second.next_cursor, limit=3)
    assert [line.amount_msat for line in last.lines] == [100]
    assert last.next_cursor is None


def test_trial_balance_nets_to_zero(funded, in_flight):
    _, account = funded(9_000)
    services.pending_transfer_reserve(
        key="w:tb", kind="withdrawal_reserve", debit=account, holding=in_flight, amount_msat=1_000
    )
    trial = selectors.trial_balance()
    assert trial.balanced
    assert trial.by_kind_msat["asset"] == trial.by_kind_msat["liability"] == 9_000


def test_hot_account_checkpoint_keeps_balance(funded, node_account):
    funded(1_000)
    services.hot_account_checkpoint()
    funded(2_000)
    assert selectors.account_balance_msat(account=node_account) == 3_000
    services.hot_account_checkpoint()
    assert node_account.checkpoint.balance_msat == 3_000
    assert Posting.objects.filter(account=node_account).count() == 2


@pytest.mark.parametrize(
    "own_transaction", [False, True], ids=["in-caller-transaction", "autocommit"]
)
def test_overdraft_outside_and_inside_a_transaction(request, funded, own_transaction):
    """On PostgreSQL a journal is one statement: in autocommit it is its own transaction, in a
    caller's transaction a savepoint. Either way an overdraft writes nothing and names the
    account and its balance."""
    if own_transaction:
        if connection.vendor != "postgresql":
            pytest.skip("autocommit path is PostgreSQL's")
        request.getfixturevalue("transactional_db")
    (payer, payer_account), (_, payee_account) = funded(700), funded(0)
    journals_before = Journal.objects.count()
    with pytest.raises(InsufficientBalance) as raised:
        services.transfer(
            idempotency_key="overdraft-2",
            kind="transfer",
            debit=payer_account,
            credit=payee_account,
            amount_msat=900,
        )
    assert raised.value.details == {
        "account": payer_account.code,
        "balance_msat": 700,
        "required_msat": 900,
    }
    assert Journal.objects.count() == journals_before
    assert selectors.user_balance_msat(user=payer) == 700
    # the key was not burnt: the same key posts once the money is there
    services.transfer(
        idempotency_key="overdraft-2",
        kind="transfer",
        debit=payer_account,
        credit=payee_account,
        amount_msat=700,
    )
    assert selectors.user_balance_msat(user=payer) == 0


def test_journal_touching_one_account_twice_keeps_running_balances(funded, node_account):
    user, account = funded(1_000)
    journal = services.journal_post(
        idempotency_key="twice",
        kind="adjust",
        legs=[Leg(node_account, 500), Leg(account, -300), Leg(account, -200)],
    )
    lines = list(Posting.objects.filter(journal=journal, account=account).order_by("id"))
    assert [posting.balance_after_msat for posting in lines] == [1_300, 1_500]
    assert selectors.user_balance_msat(user=user) == 1_500
    # a debit that overdraws midway is refused even if a later credit would cover it
    with pytest.raises(InsufficientBalance):
        services.journal_post(
            idempotency_key="midway",
            kind="adjust",
            legs=[Leg(account, 2_000), Leg(account, -600), Leg(node_account, -1_400)],
        )
    assert selectors.user_balance_msat(user=user) == 1_500
    assert run_checks().ok
