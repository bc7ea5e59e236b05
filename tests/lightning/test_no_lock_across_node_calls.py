"""DESIGN rule 5: never hold a database transaction (and so a row lock) open across a call to
a node. Every backend method is wrapped by a spy that records whether a transaction was open
when it was called, through deposits, settlement, withdrawals, internal payments, the
tracker and the polling job."""

import functools

import pytest
from django.db import connection

from ledger.checks import run_checks
from lightning.backends.base import LightningBackend
from lightning.backends.fake import FakeBackend
from lightning.payments import payments_track_pending, withdrawal_create
from lightning.services import deposit_create, invoices_poll_open

NODE_METHODS = [
    name
    for name, member in vars(LightningBackend).items()
    if callable(member)
    and getattr(member, "__isabstractmethod__", False)
    and name != "from_connection"
]


@pytest.fixture
def node_calls(monkeypatch):
    """(method name, transaction open?) for every call to the simulated node."""
    calls: list[tuple[str, bool]] = []
    for name in NODE_METHODS:
        original = getattr(FakeBackend, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            calls.append((_name, connection.in_atomic_block))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(FakeBackend, name, functools.wraps(original)(spy))
    return calls


def test_no_transaction_is_open_during_any_node_call(committed_db, make_user, world, node_calls):
    payer, payee = make_user(), make_user()
    funding = deposit_create(user=payer, amount_msat=500_000)
    world.pay(funding.bolt11)
    invoices_poll_open()
    withdrawal_create(user=payer, bolt11=world.invoice(100_000))
    world.fail_next()
    withdrawal_create(user=payer, bolt11=world.invoice(10_000))
    withdrawal_create(user=payer, bolt11=deposit_create(user=payee, amount_msat=20_000).bolt11)
    world.hang_next()
    withdrawal_create(user=payer, bolt11=world.invoice(30_000), wait_s=0.2)
    world.resolve(succeed=True)
    payments_track_pending()
    called = {name for name, _ in node_calls}
    assert {
        "create_invoice",
        "lookup_invoice",
        "cancel_invoice",
        "pay_invoice",
        "lookup_payment",
    } <= called
    assert [name for name, in_transaction in node_calls if in_transaction] == []
    assert run_checks().ok
