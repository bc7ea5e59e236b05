"""Concurrency and crashes with real threads and real processes, on PostgreSQL."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from accounts.selectors import withdrawal_allowance
from ledger.checks import run_checks
from ledger.models import Journal
from ledger.selectors import user_balance_msat
from lightning.models import Invoice, InvoiceStatus, InvoiceStreamCursor, Payment, PaymentStatus
from lightning.payments import payments_track_pending, withdrawal_create
from lightning.services import deposit_create, invoices_poll_open
from tests.lightning.conftest import fakenode

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

ROOT = Path(settings.BASE_DIR)


def child_env() -> dict[str, str]:
    """Environment for a child process using this test run's database."""
    db = settings.DATABASES["default"]
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "LOG_LEVEL": "WARNING",
    }


def wait_for(predicate, timeout_s: float = 30.0, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError("condition not reached in time")


def fund(user, world, amount_msat):
    invoice = deposit_create(user=user, amount_msat=amount_msat)
    world.pay(invoice.bolt11)
    invoices_poll_open()
    assert user_balance_msat(user=user) == amount_msat


def _race(targets: list, action) -> list[str]:
    """Run action(target) in one thread per target, all released at once; their outcomes."""
    barrier = threading.Barrier(len(targets))
    outcomes: list[str] = []
    lock = threading.Lock()

    def run(target) -> None:
        try:
            barrier.wait()
            result = action(target)
        except Exception as error:
            result = type(error).__name__
        finally:
            connection.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=run, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_fifty_concurrent_withdrawals_of_the_whole_balance(make_user, world):
    user = make_user()
    fund(user, world, 100_000)
    # Each spends the whole balance: 99,000 msat + a 1,000 msat fee reserve.
    invoices = [world.invoice(99_000) for _ in range(50)]
    outcomes = _race(
        invoices,
        lambda bolt11: withdrawal_create(user=user, bolt11=bolt11, max_fee_msat=1_000).status,
    )
    assert sorted(set(outcomes)) == ["InsufficientBalance", "succeeded"], outcomes
    assert outcomes.count("succeeded") == 1
    paid = Payment.objects.get(user=user, status=PaymentStatus.SUCCEEDED)
    assert user_balance_msat(user=user) == 1_000 - paid.fee_msat
    assert run_checks().ok


def test_concurrent_internal_payments_of_the_whole_balance(make_user, world):
    """The early balance check reads without a lock, so all 20 pass it; the ledger lets one
    through. The others roll back whole (no payment row, the invoices stay unpaid)."""
    payer = make_user()
    fund(payer, world, 30_000)
    invoices = [deposit_create(user=make_user(), amount_msat=30_000) for _ in range(20)]
    outcomes = _race(
        invoices, lambda invoice: withdrawal_create(user=payer, bolt11=invoice.bolt11).status
    )
    assert sorted(outcomes) == ["InsufficientBalance"] * 19 + ["succeeded"], outcomes
    assert Payment.objects.filter(user=payer).count() == 1
    assert (
        Invoice.objects.filter(status=InvoiceStatus.SETTLED, settled_internally=True).count() == 1
    )
    assert user_balance_msat(user=payer) == 0
    assert run_checks().ok


def test_one_internal_invoice_paid_by_many_at_once_is_paid_once(make_user, world):
    payee_invoice = deposit_create(user=make_user(), amount_msat=5_000)
    payers = [make_user() for _ in range(12)]
    for payer in payers:
        fund(payer, world, 5_000)
    outcomes = _race(
        payers, lambda payer: withdrawal_create(user=payer, bolt11=payee_invoice.bolt11).status
    )
    assert sorted(outcomes) == ["AlreadyPaid"] * 11 + ["succeeded"], outcomes
    assert Payment.objects.filter(payment_hash=payee_invoice.payment_hash).count() == 1
    assert Journal.objects.filter(kind="internal_payment").count() == 1
    assert sum(user_balance_msat(user=payer) for payer in payers) == 11 * 5_000
    assert user_balance_msat(user=payee_invoice.user) == 5_000
    assert run_checks().ok


def test_worker_killed_mid_payment_neither_pays_twice_nor_loses_funds(make_user, world):
    user = make_user()
    fund(user, world, 300_000)
    bolt11 = world.invoice(100_000)
    world.hang_next()
    script = (
        "from accounts.models import User; from lightning.payments import withdrawal_create; "
        f"withdrawal_create(user=User.objects.get(pk={user.pk}), bolt11='{bolt11}', "
        "max_fee_msat=5000, wait_s=60)"
    )
    child = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=child_env()
    )
    try:
        wait_for(lambda: Payment.objects.filter(user=user, sent_at__isnull=False).exists())
        time.sleep(0.3)  # inside the node call
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    payment = Payment.objects.get(user=user)
    assert payment.status == PaymentStatus.PENDING
    assert user_balance_msat(user=user) == 300_000 - 105_000  # reserved, not lost
    payments_track_pending()  # the restarted worker: still in flight, nothing sent again
    world.resolve(succeed=True)
    payments_track_pending()
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert Payment.objects.filter(payment_hash=payment.payment_hash).count() == 1
    assert user_balance_msat(user=user) == 300_000 - 100_000 - payment.fee_msat
    assert run_checks().ok


def start_listener() -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "listen"],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.DEVNULL,
    )


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_two_listeners_credit_once_and_a_restart_resumes_from_the_cursor(make_user, world, alpha):
    users = [make_user() for _ in range(6)]
    first, second = start_listener(), start_listener()
    try:
        invoices = [
            deposit_create(user=user, amount_msat=10_000 + i) for i, user in enumerate(users)
        ]
        for invoice in invoices:
            world.pay(invoice.bolt11)
        wait_for(
            lambda: Invoice.objects.filter(status=InvoiceStatus.SETTLED).count() == len(invoices)
        )
        # The first listener dies hard; more money arrives while only the second runs.
        stop(first, signal.SIGKILL)
        more = [deposit_create(user=user, amount_msat=20_000) for user in users[:3]]
        for invoice in more:
            world.pay(invoice.bolt11)
        wait_for(lambda: Invoice.objects.filter(status=InvoiceStatus.SETTLED).count() == 9)
        stop(second)
        # Money arrives while no listener runs; a restarted one picks it up from its cursor.
        late = deposit_create(user=users[5], amount_msat=30_000)
        world.pay(late.bolt11)
        cursor_before = InvoiceStreamCursor.objects.get(node=alpha).cursor
        third = start_listener()
        try:
            wait_for(lambda: Invoice.objects.filter(status=InvoiceStatus.SETTLED).count() == 10)
            wait_for(lambda: InvoiceStreamCursor.objects.get(node=alpha).cursor != cursor_before)
        finally:
            stop(third)
    finally:
        stop(first, signal.SIGKILL)
        stop(second)
    assert Journal.objects.filter(kind="deposit").count() == 10
    for index, user in enumerate(users):
        expected = 10_000 + index + (20_000 if index < 3 else 0) + (30_000 if index == 5 else 0)
        assert user_balance_msat(user=user) == expected
    assert run_checks().ok


def test_concurrent_internal_payments_never_pass_the_daily_limit_together(
    make_user, world, settings
):
    """The early limit check reads without a lock: all 20 pass it. The daily limit must
    still hold when they write: 25,000 msat a day lets exactly two 10,000 msat payments
    through, whatever the balance."""
    settings.WITHDRAWAL_DAILY_MAX_MSAT = 25_000
    payer = make_user()
    fund(payer, world, 500_000)
    invoices = [deposit_create(user=make_user(), amount_msat=10_000) for _ in range(20)]
    outcomes = _race(
        invoices, lambda invoice: withdrawal_create(user=payer, bolt11=invoice.bolt11).status
    )
    assert sorted(outcomes) == ["LimitExceeded"] * 18 + ["succeeded"] * 2, outcomes
    assert user_balance_msat(user=payer) == 480_000
    assert run_checks().ok


def test_mixed_withdrawals_of_two_users_count_exactly_and_never_deadlock(
    make_user, world, settings
):
    """Two users pay each other's invoices, pay outside invoices (a third of which fail and
    give their count back) and race for their daily limits, all at once: every lock order
    meets (window rows, then accounts, on every path). Afterwards each user's count is
    exactly their live payments, and the ledger balances."""
    settings.WITHDRAWAL_DAILY_MAX_MSAT = 250_000
    alice, bob = make_user(), make_user()
    fund(alice, world, 1_000_000)
    fund(bob, world, 1_000_000)
    fakenode("fail-next", "4", "--node", "alpha", "--reason", "no_route")
    jobs = []
    for index in range(12):
        jobs.append((alice, deposit_create(user=bob, amount_msat=20_000 + index).bolt11))
        jobs.append((bob, deposit_create(user=alice, amount_msat=20_000 + index).bolt11))
        jobs.append((alice if index % 2 else bob, world.invoice(10_000 + index)))
    outcomes = _race(
        jobs,
        lambda job: withdrawal_create(user=job[0], bolt11=job[1]).status,
    )
    assert {"succeeded", "failed", "LimitExceeded"} >= set(outcomes), outcomes
    assert "succeeded" in outcomes and "LimitExceeded" in outcomes and "failed" in outcomes
    for user in (alice, bob):
        live = Payment.objects.filter(
            user=user, status__in=[PaymentStatus.PENDING, PaymentStatus.SUCCEEDED]
        )
        counted = withdrawal_allowance(user=user).withdrawn_today_msat
        assert counted == sum(payment.amount_msat for payment in live) <= 250_000
    assert run_checks().ok
