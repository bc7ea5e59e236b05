from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.selectors import daily_withdrawn_msat
from ledger import services as ledger
from ledger.errors import IdempotencyConflict, InsufficientBalance
from ledger.models import PendingTransfer
from ledger.selectors import account_balance_msat, user_balance_msat
from lightning.backends import base
from onchain import services
from onchain.errors import (
    AmountTooSmall,
    InvalidAddress,
    LimitExceeded,
    NotCancelable,
    WrongNetwork,
)
from onchain.models import Batch, BatchStatus, OnchainWithdrawal, WithdrawalStatus
from tests.onchain.wallet import random_address

RESERVE = 2_000_000  # ONCHAIN_FEE_RESERVE_SAT default, in msat


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.ONCHAIN_BATCH_MIN_OUTPUTS = 1
    settings.ONCHAIN_CONFIRMATIONS = 3


def node_onchain_msat():
    return account_balance_msat(
        account=ledger.node_asset_account_get_or_create(node_name="chain", rail="onchain")
    )


def in_flight_msat():
    return account_balance_msat(
        account=ledger.system_account_get_or_create(code=ledger.WITHDRAWALS_IN_FLIGHT)
    )


def request(user, amount_sat=10_000, address=None, **kwargs):
    return services.withdrawal_request(
        user=user,
        address=random_address() if address is None else address,
        amount_sat=amount_sat,
        **kwargs,
    )


# --- requests ------------------------------------------------------------------------------


def test_request_reserves_amount_and_fee_reserve(funded_user, ledger_ok):
    user = funded_user(100_000_000)
    withdrawal = request(user, 10_000)
    assert withdrawal.status == WithdrawalStatus.QUEUED
    assert withdrawal.fee_reserve_msat == RESERVE
    assert user_balance_msat(user=user) == 100_000_000 - 10_000_000 - RESERVE
    assert in_flight_msat() == 10_000_000 + RESERVE
    pending = PendingTransfer.objects.get(key=f"onchain-withdrawal:{withdrawal.pk}")
    assert pending.state == "pending"
    ledger_ok()


@pytest.mark.parametrize(
    ("address", "error"),
    [
        ("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", WrongNetwork),
        ("garbage", InvalidAddress),
        ("", InvalidAddress),
    ],
)
def test_bad_address_changes_nothing(funded_user, address, error):
    user = funded_user(100_000_000)
    with pytest.raises(error):
        request(user, address=address)
    assert not OnchainWithdrawal.objects.exists()
    assert user_balance_msat(user=user) == 100_000_000


def test_dust_is_refused(funded_user, settings):
    user = funded_user(100_000_000)
    with pytest.raises(AmountTooSmall) as raised:
        request(user, settings.ONCHAIN_DUST_LIMIT_SAT - 1)
    assert raised.value.code == "amount_too_small"
    assert request(user, settings.ONCHAIN_DUST_LIMIT_SAT).status == "queued"


def test_limits(funded_user, settings):
    settings.WITHDRAWAL_MAX_MSAT = 50_000_000
    settings.WITHDRAWAL_DAILY_MAX_MSAT = 80_000_000
    user = funded_user(1_000_000_000)
    with pytest.raises(LimitExceeded):
        request(user, 50_001)
    request(user, 50_000)
    with pytest.raises(LimitExceeded) as raised:
        request(user, 30_001)
    assert raised.value.code == "limit_exceeded"
    request(user, 30_000)


def test_canceled_request_does_not_count_against_daily_limit(funded_user, settings):
    settings.WITHDRAWAL_DAILY_MAX_MSAT = 20_000_000
    user = funded_user(1_000_000_000)
    first = request(user, 20_000)
    services.withdrawal_cancel(withdrawal_id=first.pk)
    request(user, 20_000)


def test_insufficient_balance_includes_the_reserve(funded_user):
    user = funded_user(10_000_000)  # exactly the amount, nothing for the fee reserve
    with pytest.raises(InsufficientBalance) as raised:
        request(user, 10_000)
    assert raised.value.details["fee_reserve_msat"] == RESERVE
    assert not OnchainWithdrawal.objects.exists()


def test_idempotency_key(funded_user):
    user = funded_user(100_000_000)
    address = random_address()
    first = request(user, 10_000, address=address, idempotency_key="k1")
    again = request(user, 10_000, address=address.upper(), idempotency_key="k1")
    assert again.pk == first.pk
    with pytest.raises(IdempotencyConflict):
        request(user, 10_001, address=address, idempotency_key="k1")
    assert OnchainWithdrawal.objects.count() == 1
    assert user_balance_msat(user=user) == 100_000_000 - 10_000_000 - RESERVE


def test_cancel_refunds_only_queued(funded_user, use_wallet, ledger_ok):
    user = funded_user(100_000_000)
    queued = request(user)
    canceled = services.withdrawal_cancel(withdrawal_id=queued.pk)
    assert canceled.status == WithdrawalStatus.CANCELED
    assert user_balance_msat(user=user) == 100_000_000
    assert services.withdrawal_cancel(withdrawal_id=queued.pk).status == "canceled"  # idempotent
    sent = request(user)
    services.batch_round()
    with pytest.raises(NotCancelable):
        services.withdrawal_cancel(withdrawal_id=sent.pk)
    ledger_ok()


# --- the batch round -----------------------------------------------------------------------


def test_round_sends_one_transaction_and_posts(funded_user, use_wallet, ledger_ok):
    users = [funded_user(100_000_000) for _ in range(3)]
    amounts = [10_000, 20_000, 70_000]
    withdrawals = [request(u, a) for u, a in zip(users, amounts, strict=True)]
    before_node = node_onchain_msat()

    report = services.batch_round()

    assert len(use_wallet.sends) == 1
    label, outputs = use_wallet.sends[0]
    assert sorted(outputs) == sorted((w.address, w.amount_sat) for w in withdrawals)
    batch = Batch.objects.get()
    assert report.sent == [batch.pk]
    assert batch.status == BatchStatus.BROADCAST and batch.label == label
    fee_msat = (150 + 31 * 3) * 1000
    assert batch.fee_sat * 1000 == fee_msat
    rows = list(OnchainWithdrawal.objects.order_by("id"))
    assert [w.status for w in rows] == ["broadcast"] * 3
    assert sum(w.fee_share_msat for w in rows) == fee_msat
    assert [w.fee_msat for w in rows] == [w.fee_share_msat for w in rows]  # under the reserve
    for user, w in zip(users, rows, strict=True):
        assert user_balance_msat(user=user) == 100_000_000 - w.amount_msat - w.fee_msat
    assert in_flight_msat() == 0
    assert before_node - node_onchain_msat() == sum(amounts) * 1000 + fee_msat
    ledger_ok()


def test_confirmations_then_confirmed(funded_user, use_wallet, ledger_ok):
    request(funded_user(100_000_000))
    services.batch_round()
    batch = Batch.objects.get()
    use_wallet.mine(2)
    services.batch_round()
    batch.refresh_from_db()
    assert (batch.status, batch.confirmations) == ("broadcast", 2)
    use_wallet.mine(1)
    report = services.batch_round()
    batch.refresh_from_db()
    assert report.confirmed == [batch.pk]
    assert batch.status == "confirmed" and batch.confirmed_at is not None
    assert OnchainWithdrawal.objects.get().status == "confirmed"
    ledger_ok()


def test_fee_above_reserve_is_operator_expense(funded_user, use_wallet, ledger_ok):
    users = [funded_user(100_000_000) for _ in range(2)]
    big = request(users[0], 90_000)
    small = request(users[1], 10_000)
    use_wallet.fee_override_sat = 5_000  # shares 4500 and 500 sat; reserve is 2000 sat each
    services.batch_round()
    big.refresh_from_db()
    small.refresh_from_db()
    assert (big.fee_share_msat, big.fee_msat) == (4_500_000, RESERVE)
    assert (small.fee_share_msat, small.fee_msat) == (500_000, 500_000)
    assert user_balance_msat(user=users[0]) == 100_000_000 - 90_000_000 - RESERVE
    expense = ledger.system_account_get_or_create(code=services.ONCHAIN_FEES, kind="expense")
    assert account_balance_msat(account=expense) == 2_500_000
    ledger_ok()


def test_thresholds_wait_then_send(funded_user, use_wallet, settings):
    settings.ONCHAIN_BATCH_MIN_OUTPUTS = 3
    settings.ONCHAIN_BATCH_MAX_WAIT_MIN = 60
    user = funded_user(1_000_000_000)
    first = request(user)
    report = services.batch_round()
    assert not use_wallet.sends and any("waiting" in line for line in report.lines)
    OnchainWithdrawal.objects.filter(pk=first.pk).update(
        created_at=timezone.now() - timedelta(minutes=61)
    )
    services.batch_round()
    assert len(use_wallet.sends) == 1


def test_max_outputs_makes_several_batches(funded_user, use_wallet, settings, ledger_ok):
    settings.ONCHAIN_BATCH_MAX_OUTPUTS = 2
    user = funded_user(1_000_000_000)
    for _ in range(5):
        request(user)
    services.batch_round()
    assert [len(outputs) for _, outputs in use_wallet.sends] == [2, 2, 1]
    assert Batch.objects.filter(status="broadcast").count() == 3
    ledger_ok()


def test_same_address_waits_for_the_next_batch(funded_user, use_wallet, ledger_ok):
    address = random_address()
    user = funded_user(1_000_000_000)
    request(user, address=address)
    request(user, address=address)
    services.batch_round()
    assert len(use_wallet.sends) == 2
    assert all(len(outputs) == 1 for _, outputs in use_wallet.sends)
    ledger_ok()


def test_force_ignores_thresholds_and_pause(funded_user, use_wallet, settings):
    settings.ONCHAIN_BATCH_MIN_OUTPUTS = 100
    request(funded_user(100_000_000))
    services.batching_set_paused(paused=True)
    report = services.batch_round()
    assert not use_wallet.sends and "paused" in report.lines[-1]
    services.batch_round(force=True)
    assert len(use_wallet.sends) == 1


def test_pause_and_resume(funded_user, use_wallet):
    request(funded_user(100_000_000))
    services.batching_set_paused(paused=True, reason="fee spike")
    services.batch_round()
    assert not use_wallet.sends
    services.batching_set_paused(paused=False)
    services.batch_round()
    assert len(use_wallet.sends) == 1


# --- failures ------------------------------------------------------------------------------


def test_refusal_requeues_then_fails_and_refunds(funded_user, use_wallet, settings, ledger_ok):
    settings.ONCHAIN_MAX_ATTEMPTS = 2
    user = funded_user(100_000_000)
    withdrawal = request(user)
    use_wallet.next_error = base.NodeRejected("insufficient funds", reason="insufficient_balance")
    report = services.batch_round()
    withdrawal.refresh_from_db()
    assert report.failed and withdrawal.status == "queued" and withdrawal.attempts == 1
    assert withdrawal.batch is None
    assert Batch.objects.get().status == "failed"
    assert daily_withdrawn_msat(user=user) == withdrawal.amount_sat * 1000  # still counts
    use_wallet.next_error = base.NodeRejected("insufficient funds", reason="insufficient_balance")
    services.batch_round()
    withdrawal.refresh_from_db()
    assert withdrawal.status == "failed" and withdrawal.attempts == 2
    assert user_balance_msat(user=user) == 100_000_000
    assert daily_withdrawn_msat(user=user) == 0  # failed: it no longer counts
    assert not use_wallet.sends
    ledger_ok()


def test_unreachable_node_requeues_without_counting(funded_user, use_wallet, ledger_ok):
    withdrawal = request(funded_user(100_000_000))
    use_wallet.unreachable = True
    services.batch_round()
    withdrawal.refresh_from_db()
    assert withdrawal.status == "queued" and withdrawal.attempts == 0
    use_wallet.unreachable = False
    services.batch_round()
    withdrawal.refresh_from_db()
    assert withdrawal.status == "broadcast"
    assert Batch.objects.filter(status="failed").count() == 1
    ledger_ok()


def test_unknown_outcome_recovered_by_label_without_resend(funded_user, use_wallet, ledger_ok):
    withdrawal = request(funded_user(100_000_000))
    use_wallet.unknown_after_send = True
    report = services.batch_round()
    batch = Batch.objects.get()
    assert report.unknown == [batch.pk] and batch.status == "created"
    withdrawal.refresh_from_db()
    assert withdrawal.status == "batched"
    report = services.batch_round()
    batch.refresh_from_db()
    assert report.recovered == [batch.pk] and batch.status == "broadcast"
    assert len(use_wallet.sends) == 1
    withdrawal.refresh_from_db()
    assert withdrawal.status == "broadcast"
    ledger_ok()


def test_crash_after_send_many_returns_recovers_without_second_broadcast(
    funded_user, use_wallet, monkeypatch, ledger_ok
):
    withdrawals = [request(funded_user(100_000_000)) for _ in range(3)]

    def crash(**kwargs):
        raise SystemExit("worker killed after the broadcast, before the commit")

    with monkeypatch.context() as patch:
        patch.setattr(services, "batch_record_broadcast", crash)
        with pytest.raises(SystemExit):
            services.batch_round()
    batch = Batch.objects.get()
    assert batch.status == "created" and batch.sent_at is not None and batch.txid == ""
    assert len(use_wallet.sends) == 1

    services.batch_round()  # a new worker
    services.batch_round()
    batch.refresh_from_db()
    assert batch.status == "broadcast" and batch.txid == use_wallet.order[0]
    assert len(use_wallet.sends) == 1
    assert {
        w.status for w in OnchainWithdrawal.objects.filter(pk__in=[w.pk for w in withdrawals])
    } == {"broadcast"}
    ledger_ok()


def test_crash_found_by_outputs_when_the_label_is_lost(funded_user, use_wallet, monkeypatch):
    request(funded_user(100_000_000))
    use_wallet.unknown_after_send = True
    services.batch_round()
    use_wallet.hide_labels = True
    Batch.objects.update(sent_at=timezone.now() - timedelta(hours=1))  # resend would be allowed
    services.batch_round()
    assert Batch.objects.get().status == "broadcast"
    assert len(use_wallet.sends) == 1


def test_search_by_outputs_skips_an_earlier_batch_paying_the_same(
    funded_user, use_wallet, settings, ledger_ok
):
    # The same user sends the same amount to the same address twice; the second send never
    # reaches the node. The first batch's transaction pays exactly the second one's outputs:
    # taking it would record the second withdrawal as sent (and break the unique txid).
    user = funded_user(100_000_000)
    address = random_address()
    services.withdrawal_request(user=user, address=address, amount_sat=10_000)
    services.batch_round()
    first = Batch.objects.get()
    second = services.withdrawal_request(user=user, address=address, amount_sat=10_000)
    use_wallet.next_error = base.OutcomeUnknown("timeout before anything was sent")
    services.batch_round()
    lost = Batch.objects.exclude(pk=first.pk).get()
    assert lost.status == "created" and len(use_wallet.sends) == 1
    report = services.batch_round()
    assert not report.recovered
    Batch.objects.filter(pk=lost.pk).update(
        sent_at=timezone.now() - timedelta(seconds=settings.ONCHAIN_RESEND_AFTER_S + 1)
    )
    report = services.batch_round()
    lost.refresh_from_db()
    second.refresh_from_db()
    assert report.sent == [lost.pk] and len(use_wallet.sends) == 2
    assert lost.txid == use_wallet.order[1] != first.txid and second.status == "broadcast"
    ledger_ok()


def test_not_found_is_resent_only_after_the_wait(funded_user, use_wallet, settings, ledger_ok):
    withdrawal = request(funded_user(100_000_000))
    use_wallet.next_error = base.OutcomeUnknown("timeout before anything was sent")
    services.batch_round()
    batch = Batch.objects.get()
    assert batch.status == "created" and not use_wallet.sends
    services.batch_round()  # too early: the node might still be working on the first call
    assert not use_wallet.sends
    Batch.objects.update(
        sent_at=timezone.now() - timedelta(seconds=settings.ONCHAIN_RESEND_AFTER_S + 1)
    )
    services.batch_round()
    batch.refresh_from_db()
    assert len(use_wallet.sends) == 1 and use_wallet.sends[0][0] == batch.label
    assert batch.status == "broadcast" and batch.send_attempts == 2
    withdrawal.refresh_from_db()
    assert withdrawal.status == "broadcast"
    ledger_ok()


def test_unclaimed_created_batch_is_sent_by_the_next_round(funded_user, use_wallet, monkeypatch):
    request(funded_user(100_000_000))
    with monkeypatch.context() as patch:
        patch.setattr(services, "_send", lambda **kwargs: "unknown")  # died before the claim
        services.batch_round()
    assert Batch.objects.get().sent_at is None
    services.batch_round()
    assert len(use_wallet.sends) == 1 and Batch.objects.get().status == "broadcast"


def test_claim_is_exclusive(funded_user, use_wallet):
    request(funded_user(100_000_000))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(services, "_send", lambda **kwargs: "unknown")
        services.batch_round()
    batch = Batch.objects.get()
    assert services._claim(batch_id=batch.pk, expected_sent_at=None)
    assert not services._claim(batch_id=batch.pk, expected_sent_at=None)
    batch.refresh_from_db()
    assert services._claim(batch_id=batch.pk, expected_sent_at=batch.sent_at)
    assert not services._claim(batch_id=batch.pk, expected_sent_at=batch.sent_at)


def test_fee_unknown_at_send_is_filled_by_tracking(funded_user, use_wallet, ledger_ok):
    user = funded_user(100_000_000)
    withdrawal = request(user)
    use_wallet.report_fee = False
    services.batch_round()
    withdrawal.refresh_from_db()
    assert Batch.objects.get().fee_sat is None and withdrawal.status == "batched"
    services.batch_round()  # tracking learns the fee from lookup_transaction
    withdrawal.refresh_from_db()
    assert withdrawal.status == "broadcast" and withdrawal.fee_msat == (150 + 31) * 1000
    ledger_ok()


def test_missing_transaction_is_flagged_not_refunded(funded_user, use_wallet, ledger_ok):
    user = funded_user(100_000_000)
    request(user)
    services.batch_round()
    batch = Batch.objects.get()
    balance = user_balance_msat(user=user)
    use_wallet.drop(batch.txid)
    report = services.batch_round()
    batch.refresh_from_db()
    assert batch.missing_since is not None and batch.status == "broadcast"
    assert any("MISSING" in line for line in report.lines)
    assert user_balance_msat(user=user) == balance
    assert len(use_wallet.sends) == 1
    ledger_ok()


def test_eclair_nodes_never_batch(funded_user, use_wallet, node):
    node.kind = "eclair"
    node.save()
    request(funded_user(100_000_000))
    report = services.batch_round()
    assert not use_wallet.sends
    assert "no enabled on-chain node" in report.lines[-1]
