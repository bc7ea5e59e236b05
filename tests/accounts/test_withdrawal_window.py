"""The daily withdrawal limit as a running total (accounts.WithdrawalWindow): counting,
refusing, the minutes leaving the window, refunds giving the amount back, and the migration
that fills it from the withdrawals made before it existed."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor

from accounts.models import WithdrawalMinute, WithdrawalWindow
from accounts.selectors import withdrawal_allowance
from accounts.services import (
    RELEASE_MARGIN,
    user_limits_set,
    withdrawal_window_count,
    withdrawal_window_release,
)
from lightning.errors import LimitExceeded
from lightning.models import Node, Payment, PaymentStatus

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 20, 12, 30, 45, tzinfo=UTC)


def count(user, amount_msat: int, *, at: datetime, limit: int = 100_000) -> None:
    with transaction.atomic():
        withdrawal_window_count(user=user, amount_msat=amount_msat, daily_limit_msat=limit, now=at)


def withdrawn(user, *, at: datetime) -> int:
    return withdrawal_allowance(user=user, now=at).withdrawn_today_msat


def test_counts_add_up_and_the_limit_refuses_one_too_many(make_user):
    user = make_user()
    count(user, 40_000, at=T0)
    count(user, 60_000, at=T0 + timedelta(seconds=5))  # exactly the limit: allowed
    assert withdrawn(user, at=T0 + timedelta(minutes=1)) == 100_000
    with pytest.raises(LimitExceeded) as refused:
        count(user, 1, at=T0 + timedelta(minutes=2))
    assert refused.value.details == {"daily_withdrawal_msat": 100_000, "daily_withdrawn_msat": 0}
    # Nothing of the refused one was counted (the details above are read at the real time,
    # a day after T0: nothing of T0 counts then).
    assert withdrawn(user, at=T0 + timedelta(minutes=3)) == 100_000
    assert WithdrawalMinute.objects.filter(user=user).count() == 1  # one minute so far


def test_one_larger_than_the_limit_is_refused_on_a_users_first_count(make_user):
    user = make_user()
    with pytest.raises(LimitExceeded):
        count(user, 100_001, at=T0)
    assert not WithdrawalWindow.objects.filter(user=user).exists()


def test_a_withdrawal_counts_for_24_hours_after_its_minute_ends(make_user):
    user = make_user()
    count(user, 70_000, at=T0)  # minute 12:30
    assert withdrawn(user, at=T0 + timedelta(hours=24)) == 70_000  # 12:30:45 next day
    assert withdrawn(user, at=datetime(2026, 11, 21, 12, 30, 59, tzinfo=UTC)) == 70_000
    assert withdrawn(user, at=datetime(2026, 11, 21, 12, 31, tzinfo=UTC)) == 0
    # Until then it takes its share of the limit; afterwards the next count drops it.
    with pytest.raises(LimitExceeded):
        count(user, 40_000, at=datetime(2026, 11, 21, 12, 30, 59, tzinfo=UTC))
    count(user, 40_000, at=datetime(2026, 11, 21, 12, 31, tzinfo=UTC))
    window = WithdrawalWindow.objects.get(user=user)
    assert window.total_msat == 40_000
    assert window.counted_from == datetime(2026, 11, 20, 12, 31, tzinfo=UTC)


def test_a_lower_limit_applies_to_what_was_already_counted(make_user):
    user = make_user()
    count(user, 50_000, at=T0)
    with pytest.raises(LimitExceeded):
        count(user, 1, at=T0, limit=50_000 - 1)
    count(user, 50_000, at=T0, limit=100_000)


def test_a_refund_gives_its_amount_back(make_user):
    user = make_user()
    count(user, 30_000, at=T0)
    count(user, 50_000, at=T0 + timedelta(minutes=10))
    with transaction.atomic():
        assert withdrawal_window_release(
            user_id=user.pk, amount_msat=30_000, counted_at=T0, now=T0 + timedelta(hours=2)
        )
    assert withdrawn(user, at=T0 + timedelta(hours=2)) == 50_000
    count(user, 50_000, at=T0 + timedelta(hours=2))  # the 30,000 are free again
    assert WithdrawalMinute.objects.get(user=user, minute=T0.replace(second=0)).amount_msat == 0


def test_a_refund_close_to_the_end_of_the_window_is_left_to_expire(make_user):
    """A concurrent count may drop that minute from a snapshot taken before the refund: it
    must never subtract the amount twice, so the last RELEASE_MARGIN is not given back."""
    user = make_user()
    count(user, 30_000, at=T0)
    late = T0 + timedelta(hours=24) - RELEASE_MARGIN + timedelta(minutes=1)
    with transaction.atomic():
        assert not withdrawal_window_release(
            user_id=user.pk, amount_msat=30_000, counted_at=T0, now=late
        )
    assert withdrawn(user, at=late) == 30_000


def test_a_refund_of_something_never_counted_changes_nothing(make_user):
    user = make_user()
    count(user, 10_000, at=T0)
    with transaction.atomic():
        assert not withdrawal_window_release(
            user_id=user.pk, amount_msat=20_000, counted_at=T0, now=T0
        )
        assert not withdrawal_window_release(
            user_id=make_user().pk, amount_msat=1, counted_at=T0, now=T0
        )
    assert withdrawn(user, at=T0) == 10_000


@pytest.mark.django_db(transaction=True)
def test_counting_outside_a_transaction_is_refused(make_user):
    with pytest.raises(RuntimeError):
        withdrawal_window_count(user=make_user(), amount_msat=1, daily_limit_msat=10)
    with pytest.raises(RuntimeError):
        withdrawal_window_release(user_id=1, amount_msat=1, counted_at=T0)


def test_the_allowance_reads_the_users_limits_and_window(make_user):
    user = make_user()
    user_limits_set(user=user, max_withdrawal_msat=9_000, daily_withdrawal_msat=80_000)
    count(user, 3_000, at=T0)
    allowance = withdrawal_allowance(user=user, now=T0)
    assert allowance.withdrawn_today_msat == 3_000
    assert allowance.limits.max_withdrawal_msat == 9_000
    assert allowance.limits.daily_withdrawal_msat == 80_000
    assert allowance.balance_msat == 0


@pytest.mark.django_db(transaction=True)
def test_the_migration_counts_the_withdrawals_of_the_last_24_hours(make_user, committed_db):
    """Live Lightning payments and on-chain withdrawals of the last 24 hours, by minute;
    failed ones and older ones not."""
    from django.utils import timezone

    from onchain.models import OnchainWithdrawal

    user, other = make_user(), make_user()
    node = Node.objects.create(name="n1", kind="fake", connection="type=fake")
    now = timezone.now()

    def payment(owner, amount, status, hours_ago, n=[0]):  # noqa: B006
        n[0] += 1
        created = Payment.objects.create(
            user=owner,
            node=node,
            payment_hash=f"{n[0]:064x}",
            bolt11="lnbcrt1",
            amount_msat=amount,
            status=status,
        )
        Payment.objects.filter(pk=created.pk).update(created_at=now - timedelta(hours=hours_ago))

    payment(user, 1_000, PaymentStatus.SUCCEEDED, 0)
    payment(user, 200, PaymentStatus.PENDING, 23)
    payment(user, 30, PaymentStatus.FAILED, 0)
    payment(user, 4, PaymentStatus.SUCCEEDED, 25)
    payment(other, 7, PaymentStatus.SUCCEEDED, 1)
    onchain = OnchainWithdrawal.objects.create(
        user=user, address="bcrt1qexample", amount_sat=5, fee_reserve_msat=0
    )
    OnchainWithdrawal.objects.create(
        user=user, address="bcrt1qexample", amount_sat=9, fee_reserve_msat=0, status="canceled"
    )

    executor = MigrationExecutor(connection)
    executor.migrate([("accounts", "0002_api_keys_limits_idempotency")])
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert withdrawn(user, at=timezone.now()) == 1_000 + 200 + 5_000
    assert withdrawn(other, at=timezone.now()) == 7
    minutes = WithdrawalMinute.objects.filter(user=user)
    assert sum(m.amount_msat for m in minutes) == 6_200
    assert onchain.created_at.replace(second=0, microsecond=0) in {m.minute for m in minutes}
