"""ledger.transfer_claimed: a transfer that exists only if the caller's claim wrote its row,
in one PostgreSQL statement with the claim and a follow-up (internal payments use it)."""

import pytest
from django.db import IntegrityError

from ledger import selectors, services
from ledger.errors import InsufficientBalance
from ledger.models import Journal, Posting

pytestmark = pytest.mark.postgres_only

# Stand-ins for a real claim (an INSERT ... SELECT ... FOR UPDATE RETURNING id) and follow-up
# (an UPDATE ... FROM j): any statement returning `id`, and any reading `j`, will do.
CLAIM = "SELECT %s::bigint AS id WHERE %s"
FOLLOW_UP = "SELECT j.id FROM j"


def claimed(payer_account, payee_account, *, amount_msat, key="claimed-1", claim=True):
    return services.transfer_claimed(
        claim_sql=CLAIM,
        claim_params=[77, claim],
        follow_up_sql=FOLLOW_UP,
        follow_up_params=[],
        idempotency_key=key,
        kind="internal_payment",
        debit=payer_account,
        credit=payee_account,
        amount_msat=amount_msat,
        memo="test",
        reference_type="test.claim",
        created_by=None,
    )


def test_moves_the_money_and_references_the_claimed_row(funded):
    (payer, payer_account), (payee, payee_account) = funded(1_000), funded(0)
    reference_id, journal_id = claimed(payer_account, payee_account, amount_msat=400)
    journal = Journal.objects.get(pk=journal_id)
    assert (reference_id, journal.reference_type, journal.reference_id) == (
        77,
        "test.claim",
        "77",
    )
    postings = Posting.objects.filter(journal=journal).values_list("account_id", "amount_msat")
    assert sorted(postings) == sorted([(payer_account.pk, 400), (payee_account.pk, -400)])
    assert selectors.user_balance_msat(user=payer) == 600
    assert selectors.user_balance_msat(user=payee) == 400


def test_no_claim_writes_nothing(funded):
    (payer, payer_account), (_, payee_account) = funded(1_000), funded(0)
    before = Journal.objects.count()
    assert claimed(payer_account, payee_account, amount_msat=400, claim=False) is None
    assert Journal.objects.count() == before
    assert selectors.user_balance_msat(user=payer) == 1_000


def test_overdraft_names_the_account_and_writes_nothing(funded):
    (payer, payer_account), (_, payee_account) = funded(300), funded(0)
    before = Journal.objects.count()
    with pytest.raises(InsufficientBalance) as raised:
        claimed(payer_account, payee_account, amount_msat=301)
    assert raised.value.details["balance_msat"] == 300
    assert Journal.objects.count() == before
    assert selectors.user_balance_msat(user=payer) == 300


def test_a_repeated_key_fails_whole_rather_than_replaying(funded):
    (payer, payer_account), (_, payee_account) = funded(1_000), funded(0)
    claimed(payer_account, payee_account, amount_msat=100, key="once")
    with pytest.raises(IntegrityError):
        claimed(payer_account, payee_account, amount_msat=100, key="once")
    assert selectors.user_balance_msat(user=payer) == 900
