"""Property-based test of the ledger: a Hypothesis state machine drives deposits, transfers,
two-phase reservations (posted in part with a refund, or voided), reversals, replays and
checkpoints on a handful of users, against a plain-Python model of every balance. After each
step every invariant holds and every balance equals the model; InsufficientBalance is raised
exactly when the model says the money is not there.

Journals cannot be deleted (the database refuses), so each example runs inside a savepoint
that is rolled back at its end. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from ledger import selectors, services
from ledger.checks import run_checks
from ledger.errors import (
    AlreadyReversed,
    IdempotencyConflict,
    InsufficientBalance,
    InvalidPosting,
    PendingTransferResolved,
)
from ledger.models import Account, Journal, PendingTransferState, natural_sign

USERS = 4
_serial = itertools.count()

user_index = st.integers(min_value=0, max_value=USERS - 1)
amounts = st.integers(min_value=1, max_value=5_000_000)
percent = st.integers(min_value=0, max_value=100)


@dataclass
class JournalRecord:
    journal: Journal
    legs: list[tuple[Account, int]]
    reversed_by: str | None = None


@dataclass
class PendingRecord:
    key: str
    user: int
    amount: int
    reserve_journal: Journal
    state: str = PendingTransferState.PENDING
    destinations: list[tuple[Account, int]] = field(default_factory=list)


class LedgerMachine(RuleBasedStateMachine):
    journals = Bundle("journals")
    pendings = Bundle("pendings")

    def __init__(self) -> None:
        super().__init__()
        from accounts.models import User

        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        run = next(_serial)
        self.node = services.node_asset_account_get_or_create(node_name="prop")
        self.in_flight = services.system_account_get_or_create(code=services.WITHDRAWALS_IN_FLIGHT)
        self.fees = services.system_account_get_or_create(code=services.INCOME_FEES)
        self.users = []
        self.accounts = []
        for index in range(USERS):
            user = User.objects.create_user(username=f"prop-{run}-{index}", password="pw")
            self.users.append(user)
            self.accounts.append(services.user_account_get_or_create(user=user))
        self.expected: dict[int, int] = {
            account.pk: 0 for account in [self.node, self.in_flight, self.fees, *self.accounts]
        }
        self.open_reserved = [0] * USERS
        self.keys = itertools.count()

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)

    # --- the model ---------------------------------------------------------------------------

    def key(self, prefix: str) -> str:
        return f"{prefix}:{next(self.keys)}"

    def after(self, legs: list[tuple[Account, int]]) -> dict[int, int]:
        balances = dict(self.expected)
        for account, amount in legs:
            balances[account.pk] += natural_sign(account.kind) * amount
        return balances

    def overdraws(self, legs: list[tuple[Account, int]]) -> bool:
        balances = self.after(legs)
        return any(balances[account.pk] < 0 for account in self.accounts)

    def apply(self, legs: list[tuple[Account, int]]) -> None:
        self.expected = self.after(legs)

    # --- rules -------------------------------------------------------------------------------

    @rule(target=journals, user=user_index, amount=amounts)
    def deposit(self, user, amount):
        legs = [(self.node, amount), (self.accounts[user], -amount)]
        key = self.key("deposit")
        journal = services.transfer(
            idempotency_key=key,
            kind="deposit",
            debit=self.node,
            credit=self.accounts[user],
            amount_msat=amount,
        )
        assert not journal.replayed
        self.apply(legs)
        # a replay posts nothing; the same key for another amount is a conflict
        again = services.transfer(
            idempotency_key=key,
            kind="deposit",
            debit=self.node,
            credit=self.accounts[user],
            amount_msat=amount,
        )
        assert again.replayed and again.pk == journal.pk
        with pytest.raises(IdempotencyConflict):
            services.transfer(
                idempotency_key=key,
                kind="deposit",
                debit=self.node,
                credit=self.accounts[user],
                amount_msat=amount + 1,
            )
        return JournalRecord(journal, legs)

    @rule(target=journals, payer=user_index, payee=user_index, amount=amounts)
    def transfer(self, payer, payee, amount):
        if payer == payee:
            payee = (payee + 1) % USERS
        debit, credit = self.accounts[payer], self.accounts[payee]
        legs = [(debit, amount), (credit, -amount)]
        call = {
            "idempotency_key": self.key("transfer"),
            "kind": "transfer",
            "debit": debit,
            "credit": credit,
            "amount_msat": amount,
        }
        if self.overdraws(legs):
            with pytest.raises(InsufficientBalance):
                services.transfer(**call)
            return multiple()
        journal = services.transfer(**call)
        self.apply(legs)
        return JournalRecord(journal, legs)

    @rule(target=pendings, user=user_index, amount=amounts)
    def reserve(self, user, amount):
        account = self.accounts[user]
        legs = [(account, amount), (self.in_flight, -amount)]
        key = self.key("withdrawal")
        call = {
            "key": key,
            "kind": "withdrawal_reserve",
            "debit": account,
            "holding": self.in_flight,
            "amount_msat": amount,
        }
        if self.overdraws(legs):
            with pytest.raises(InsufficientBalance):
                services.pending_transfer_reserve(**call)
            return multiple()
        pending = services.pending_transfer_reserve(**call)
        assert pending.state == PendingTransferState.PENDING
        assert services.pending_transfer_reserve(**call).pk == pending.pk  # replay
        self.apply(legs)
        self.open_reserved[user] += amount
        return PendingRecord(key, user, amount, pending.reserve_journal)

    @rule(
        record=pendings,
        paid_percent=percent,
        fee_percent=percent,
        internal=st.one_of(st.none(), user_index),
        overshoot=st.booleans(),
    )
    def post(self, record, paid_percent, fee_percent, internal, overshoot):
        if record.state == PendingTransferState.VOIDED:
            with pytest.raises(PendingTransferResolved):
                services.pending_transfer_post(
                    key=record.key, kind="withdrawal_settle", destinations=[(self.node, 1)]
                )
            return
        if record.state == PendingTransferState.POSTED:  # a replay changes nothing
            pending = services.pending_transfer_post(
                key=record.key, kind="withdrawal_settle", destinations=record.destinations
            )
            assert pending.state == PendingTransferState.POSTED
            return
        if overshoot:
            with pytest.raises(InvalidPosting):
                services.pending_transfer_post(
                    key=record.key,
                    kind="withdrawal_settle",
                    destinations=[(self.node, record.amount), (self.fees, 1)],
                )
        paid = record.amount * paid_percent // 100
        fee = (record.amount - paid) * fee_percent // 100
        # paid out through the node, or (internal) to another user of the service
        target = self.node if internal is None else self.accounts[internal]
        destinations = [(target, paid), (self.fees, fee)]
        pending = services.pending_transfer_post(
            key=record.key, kind="withdrawal_settle", destinations=destinations
        )
        assert pending.state == PendingTransferState.POSTED
        refund = record.amount - paid - fee
        legs = [(self.in_flight, record.amount), (target, -paid), (self.fees, -fee)]
        legs.append((self.accounts[record.user], -refund))
        # a payment out through the node lowers the node's asset (the model's view)
        self.apply([(account, amount) for account, amount in legs if amount])
        self.open_reserved[record.user] -= record.amount
        record.state = PendingTransferState.POSTED
        record.destinations = destinations

    @rule(record=pendings)
    def void(self, record):
        if record.state == PendingTransferState.POSTED:
            with pytest.raises(PendingTransferResolved):
                services.pending_transfer_void(key=record.key, kind="withdrawal_refund")
            return
        pending = services.pending_transfer_void(key=record.key, kind="withdrawal_refund")
        assert pending.state == PendingTransferState.VOIDED
        if record.state == PendingTransferState.PENDING:
            self.apply(
                [(self.in_flight, record.amount), (self.accounts[record.user], -record.amount)]
            )
            self.open_reserved[record.user] -= record.amount
            record.state = PendingTransferState.VOIDED

    @rule(record=pendings)
    def reversing_a_two_phase_journal_is_refused(self, record):
        with pytest.raises(InvalidPosting):
            services.journal_reverse(journal=record.reserve_journal)

    @rule(target=journals, record=journals)
    def reverse(self, record):
        if record.reversed_by is not None:
            # the same reversal again is a replay; another one is refused
            again = services.journal_reverse(journal=record.journal)
            assert again.replayed and again.idempotency_key == record.reversed_by
            with pytest.raises(AlreadyReversed):
                services.journal_reverse(journal=record.journal, idempotency_key=self.key("rev"))
            return multiple()
        legs = [(account, -amount) for account, amount in record.legs]
        if self.overdraws(legs):
            with pytest.raises(InsufficientBalance):
                services.journal_reverse(journal=record.journal)
            return multiple()
        reversal = services.journal_reverse(journal=record.journal)
        assert not reversal.replayed
        self.apply(legs)
        record.reversed_by = reversal.idempotency_key
        return JournalRecord(reversal, legs)

    @rule()
    def checkpoint(self):
        services.hot_account_checkpoint()

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def balances_match_the_model(self):
        for account in [self.node, self.in_flight, self.fees, *self.accounts]:
            assert selectors.account_balance_msat(account=account) == self.expected[account.pk], (
                account.code
            )
        for index, user in enumerate(self.users):
            assert selectors.user_balance_msat(user=user) == self.expected[self.accounts[index].pk]
            assert selectors.user_pending_msat(user=user) == self.open_reserved[index]
        assert self.expected[self.in_flight.pk] == sum(self.open_reserved)

    @invariant()
    def ledger_invariants_hold(self):
        report = run_checks()
        assert report.ok, report.violations
        trial = selectors.trial_balance()
        assert trial.balanced
        # what the node holds = what we owe users + reservations in flight + fees earned
        assert self.expected[self.node.pk] == (
            sum(self.expected[account.pk] for account in self.accounts)
            + self.expected[self.in_flight.pk]
            + self.expected[self.fees.pk]
        )


@pytest.mark.slow
def test_ledger_state_machine(db):
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
