"""The ledger under real concurrency: threads with their own PostgreSQL connections, released
together by a barrier, racing for the same balance, the same idempotency key, opposite lock
orders and the two outcomes of one pending transfer. Nothing here is timed; the assertions
are about money only."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection

from ledger import selectors, services
from ledger.checks import run_checks
from ledger.errors import InsufficientBalance, PendingTransferResolved
from ledger.models import Journal, PendingTransfer, PendingTransferState, Posting

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow]


@dataclass
class Outcome:
    index: int
    result: Any = None
    error: BaseException | None = None


def race(count: int, work: Callable[[int], Any]) -> list[Outcome]:
    """Run work(0..count-1) in `count` threads released at once by a barrier. Each thread
    uses its own database connection (Django's are per thread) and closes it at the end."""
    barrier = threading.Barrier(count)
    outcomes = [Outcome(index) for index in range(count)]

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=60)
            outcomes[index].result = work(index)
        except BaseException as error:  # recorded and asserted on by the test
            outcomes[index].error = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    return outcomes


def errors_of(outcomes: list[Outcome]) -> Counter:
    return Counter(type(outcome.error).__name__ for outcome in outcomes if outcome.error)


def assert_ledger_sound() -> None:
    report = run_checks()
    assert report.ok, report.violations
    assert selectors.trial_balance().balanced


@pytest.fixture
def no_retries(caplog):
    """Fails the test if a service had to retry a deadlock or serialization failure: with
    the fixed lock order none should happen at all (the retry is only a safety net)."""
    caplog.set_level(logging.WARNING, logger="ledger.services")
    yield
    retries = [r for r in caplog.records if "transient database error" in r.getMessage()]
    assert not retries, f"{len(retries)} transient database errors were retried"


THREADS = 50


def test_fifty_transfers_of_the_whole_balance_exactly_one_wins(
    transactional_db, funded, no_retries
):
    payer, payer_account = funded(1_000_000)
    payees = [funded(0) for _ in range(THREADS)]

    outcomes = race(
        THREADS,
        lambda index: services.transfer(
            idempotency_key=f"spend-all:{index}",
            kind="transfer",
            debit=payer_account,
            credit=payees[index][1],
            amount_msat=1_000_000,
        ),
    )

    winners = [outcome for outcome in outcomes if outcome.error is None]
    assert len(winners) == 1
    assert errors_of(outcomes) == Counter({"InsufficientBalance": THREADS - 1})
    assert selectors.user_balance_msat(user=payer) == 0
    balances = [selectors.user_balance_msat(user=user) for user, _ in payees]
    assert sorted(balances) == [0] * (THREADS - 1) + [1_000_000]
    assert balances[winners[0].index] == 1_000_000
    assert Journal.objects.filter(kind="transfer").count() == 1
    assert_ledger_sound()


def test_fifty_reservations_of_the_whole_balance_exactly_one_wins(
    transactional_db, funded, in_flight, no_retries
):
    user, account = funded(777_000)

    outcomes = race(
        THREADS,
        lambda index: services.pending_transfer_reserve(
            key=f"withdrawal:{index}:reserve",
            kind="withdrawal_reserve",
            debit=account,
            holding=in_flight,
            amount_msat=777_000,
        ),
    )

    winners = [outcome for outcome in outcomes if outcome.error is None]
    assert len(winners) == 1
    assert errors_of(outcomes) == Counter({"InsufficientBalance": THREADS - 1})
    assert all(
        isinstance(outcome.error, InsufficientBalance) for outcome in outcomes if outcome.error
    )
    assert PendingTransfer.objects.count() == 1
    assert PendingTransfer.objects.get().key == f"withdrawal:{winners[0].index}:reserve"
    assert selectors.user_balance_msat(user=user) == 0
    assert selectors.user_pending_msat(user=user) == 777_000
    assert selectors.account_balance_msat(account=in_flight) == 777_000
    assert_ledger_sound()


def test_transfers_and_reservations_racing_for_one_balance(
    transactional_db, funded, in_flight, no_retries
):
    """Half the threads transfer, half reserve, all for the whole balance: one of them wins."""
    user, account = funded(50_000)
    _, payee_account = funded(0)

    def work(index: int):
        if index % 2:
            return services.transfer(
                idempotency_key=f"mixed:{index}",
                kind="transfer",
                debit=account,
                credit=payee_account,
                amount_msat=50_000,
            )
        return services.pending_transfer_reserve(
            key=f"mixed:{index}",
            kind="withdrawal_reserve",
            debit=account,
            holding=in_flight,
            amount_msat=50_000,
        )

    outcomes = race(THREADS, work)

    assert sum(outcome.error is None for outcome in outcomes) == 1
    assert errors_of(outcomes) == Counter({"InsufficientBalance": THREADS - 1})
    assert selectors.user_balance_msat(user=user) == 0
    assert (
        selectors.account_balance_msat(account=payee_account)
        + selectors.account_balance_msat(account=in_flight)
        == 50_000
    )
    assert_ledger_sound()


def test_same_idempotency_key_from_twenty_threads_posts_one_journal(
    transactional_db, funded, node_account, no_retries
):
    user, account = funded(0)

    outcomes = race(
        20,
        lambda _index: services.transfer(
            idempotency_key="deposit:same-payment-hash",
            kind="deposit",
            debit=node_account,
            credit=account,
            amount_msat=12_345,
        ),
    )

    assert errors_of(outcomes) == Counter()
    journals = [outcome.result for outcome in outcomes]
    assert len({journal.pk for journal in journals}) == 1
    assert sorted(journal.replayed for journal in journals) == [False] + [True] * 19
    assert Journal.objects.filter(idempotency_key="deposit:same-payment-hash").count() == 1
    assert selectors.user_balance_msat(user=user) == 12_345
    assert selectors.account_balance_msat(account=node_account) == 12_345
    assert_ledger_sound()


def test_same_reservation_key_from_twenty_threads_reserves_once(
    transactional_db, funded, in_flight, no_retries
):
    user, account = funded(10_000)

    outcomes = race(
        20,
        lambda _index: services.pending_transfer_reserve(
            key="withdrawal:42:reserve",
            kind="withdrawal_reserve",
            debit=account,
            holding=in_flight,
            amount_msat=4_000,
        ),
    )

    assert errors_of(outcomes) == Counter()
    assert len({outcome.result.pk for outcome in outcomes}) == 1
    assert PendingTransfer.objects.count() == 1
    assert selectors.user_balance_msat(user=user) == 6_000
    assert selectors.account_balance_msat(account=in_flight) == 4_000
    assert_ledger_sound()


ROUNDS = 15


def test_opposite_transfers_never_deadlock(transactional_db, funded, no_retries):
    (a, a_account), (b, b_account) = funded(1_000_000), funded(1_000_000)
    threads = 16

    def work(index: int) -> int:
        forwards = index % 2 == 0
        debit, credit = (a_account, b_account) if forwards else (b_account, a_account)
        moved = 0
        for round_ in range(ROUNDS):
            amount = 1 + index + round_
            services.transfer(
                idempotency_key=f"ab:{index}:{round_}",
                kind="transfer",
                debit=debit,
                credit=credit,
                amount_msat=amount,
            )
            moved += amount if forwards else -amount
        return moved

    outcomes = race(threads, work)

    assert errors_of(outcomes) == Counter()
    net_a_to_b = sum(outcome.result for outcome in outcomes)
    assert selectors.user_balance_msat(user=a) == 1_000_000 - net_a_to_b
    assert selectors.user_balance_msat(user=b) == 1_000_000 + net_a_to_b
    assert Journal.objects.filter(kind="transfer").count() == threads * ROUNDS
    assert_ledger_sound()


def test_ring_of_transfers_never_deadlocks(transactional_db, funded, no_retries):
    """A→B, B→C and C→A at once (each thread's lock order looks circular), plus C→B→A."""
    users = [funded(500_000) for _ in range(3)]
    threads = 18
    # thread i moves money from ring[i % 6][0] to ring[i % 6][1]
    ring = [(0, 1), (1, 2), (2, 0), (2, 1), (1, 0), (0, 2)]

    def work(index: int) -> None:
        source, target = ring[index % len(ring)]
        for round_ in range(ROUNDS):
            services.transfer(
                idempotency_key=f"ring:{index}:{round_}",
                kind="transfer",
                debit=users[source][1],
                credit=users[target][1],
                amount_msat=1_000 + round_,
            )

    outcomes = race(threads, work)

    assert errors_of(outcomes) == Counter()
    per_thread = sum(1_000 + round_ for round_ in range(ROUNDS))
    expected = [500_000] * 3
    for index in range(threads):
        source, target = ring[index % len(ring)]
        expected[source] -= per_thread
        expected[target] += per_thread
    assert [selectors.user_balance_msat(user=user) for user, _ in users] == expected
    assert sum(expected) == 1_500_000
    assert_ledger_sound()


@pytest.mark.parametrize("round_", range(4))
def test_post_and_void_of_one_pending_transfer_race(
    transactional_db, funded, in_flight, node_account, round_, no_retries
):
    """Four threads post (fee paid, the rest refunded), four void: one side wins, every call
    of the other side gets PendingTransferResolved, and no money is created."""
    user, account = funded(100_000)
    services.pending_transfer_reserve(
        key="w:race",
        kind="withdrawal_reserve",
        debit=account,
        holding=in_flight,
        amount_msat=60_000,
    )
    fees = services.system_account_get_or_create(code=services.INCOME_FEES)

    def work(index: int) -> PendingTransfer:
        if index % 2 == round_ % 2:
            return services.pending_transfer_post(
                key="w:race",
                kind="withdrawal_settle",
                destinations=[(node_account, 50_000), (fees, 1_000)],
            )
        return services.pending_transfer_void(key="w:race", kind="withdrawal_refund")

    outcomes = race(8, work)

    posts = [outcome for outcome in outcomes if outcome.index % 2 == round_ % 2]
    voids = [outcome for outcome in outcomes if outcome.index % 2 != round_ % 2]
    pending = PendingTransfer.objects.get(key="w:race")
    winners, losers = (
        (posts, voids) if pending.state == PendingTransferState.POSTED else (voids, posts)
    )
    assert pending.state in {PendingTransferState.POSTED, PendingTransferState.VOIDED}
    assert all(outcome.error is None for outcome in winners)
    assert all(isinstance(outcome.error, PendingTransferResolved) for outcome in losers)
    assert {outcome.result.state for outcome in winners} == {pending.state}
    # exactly one resolving journal, whichever side won
    assert Journal.objects.filter(idempotency_key__in=["w:race:post", "w:race:void"]).count() == 1
    if pending.state == PendingTransferState.POSTED:
        assert selectors.user_balance_msat(user=user) == 100_000 - 51_000
        assert selectors.account_balance_msat(account=node_account) == 100_000 - 50_000
        assert selectors.account_balance_msat(account=fees) == 1_000
    else:
        assert selectors.user_balance_msat(user=user) == 100_000
        assert selectors.account_balance_msat(account=node_account) == 100_000
        assert not Posting.objects.filter(account=fees).exists()
    assert selectors.account_balance_msat(account=in_flight) == 0
    assert_ledger_sound()


def test_deposits_to_many_users_race_with_checkpoints(
    transactional_db, funded, node_account, no_retries
):
    """Deposits to distinct users (all debiting the hot node account) while the checkpoint
    job runs: the node's balance (checkpoint + postings since) stays exact."""
    users = [funded(0) for _ in range(12)]

    def work(index: int) -> None:
        if index >= len(users):
            for _ in range(5):
                services.hot_account_checkpoint()
            return
        for round_ in range(ROUNDS):
            services.transfer(
                idempotency_key=f"dep:{index}:{round_}",
                kind="deposit",
                debit=node_account,
                credit=users[index][1],
                amount_msat=1_000,
            )

    outcomes = race(len(users) + 2, work)

    assert errors_of(outcomes) == Counter()
    services.hot_account_checkpoint()
    expected = len(users) * ROUNDS * 1_000
    assert selectors.account_balance_msat(account=node_account) == expected
    assert all(selectors.user_balance_msat(user=user) == ROUNDS * 1_000 for user, _ in users)
    assert_ledger_sound()
