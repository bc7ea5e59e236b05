"""`manage.py fakenode`: the outside world from a shell, parsed the way a demo script would."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from lightning.backends.base import InvoiceState, Network, NodeUnreachable, PaymentStatus
from lightning.connection import build_backend
from lightning.fakenode.models import FakeNode
from lightning.models import Node


def run(*args: str) -> list[str]:
    out = io.StringIO()
    call_command("fakenode", *args, stdout=out)
    return out.getvalue().strip().splitlines()


def register(name: str, connection: str = "type=fake"):
    Node.objects.create(name=name, kind="fake", connection=connection)
    return build_backend(connection, node_name=name, network=Network.REGTEST, timeout_s=5)


@pytest.fixture
def backend(db):
    return register("default")


def test_pay_settles_our_invoice(backend):
    created = backend.create_invoice(amount_msat=21_000, memo="", expiry_s=600, label="cmd-1")
    lines = run("pay", created.bolt11)
    assert f"payment_hash={created.payment_hash}" in lines[0]
    assert "settle_index=1" in lines[0] and "amount_received_msat=21000" in lines[0]
    status = backend.lookup_invoice(payment_hash=created.payment_hash)
    assert status.state == InvoiceState.SETTLED
    assert lines[-1] == status.preimage


def test_pay_amountless_needs_an_amount(backend):
    created = backend.create_invoice(amount_msat=None, memo="", expiry_s=600, label="cmd-2")
    with pytest.raises(CommandError, match="amount_required"):
        run("pay", created.bolt11)
    run("pay", f"lightning:{created.bolt11.upper()}", "--amount-msat", "5000")
    assert backend.lookup_invoice(payment_hash=created.payment_hash).amount_received_msat == 5_000


def test_pay_refuses_unknown_and_wrong_network_invoices(backend):
    outside = run("invoice", "--amount-msat", "1000")[-1]
    with pytest.raises(CommandError, match="unknown_payee"):
        run("pay", outside)
    with pytest.raises(CommandError, match="wrong_network"):
        run("pay", "lnbc1" + "q" * 100)


def test_outside_invoice_is_payable_by_our_node(backend):
    lines = run("invoice", "--amount-msat", "7000", "--memo", "pizza")
    bolt11 = lines[-1]
    assert bolt11.startswith("lnbcrt70n1")
    decoded = backend.decode_invoice(bolt11=bolt11)
    assert decoded.description == "pizza" and f"payment_hash={decoded.payment_hash}" in lines[0]
    result = backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=1)
    assert result.status == PaymentStatus.SUCCEEDED


def test_mine_and_send_to(backend):
    address = backend.new_address()
    txid = run("send-to", address, "--amount-sat", "12345")[-1]
    assert len(txid) == 64
    assert run("mine", "6")[-1].endswith("height 106")
    [tx] = [tx for tx in backend.list_transactions() if tx.txid == txid]
    assert tx.confirmations == 6 and tx.outputs[0].amount_sat == 12_345 and tx.outputs[0].ours
    with pytest.raises(CommandError, match="invalid_address"):
        run("send-to", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "--amount-sat", "1000")


def test_fail_hang_and_resolve(backend):
    run("fail-next", "--reason", "temporary_channel_failure")
    outside = run("invoice", "--amount-msat", "1000")[-1]
    failed = backend.pay_invoice(bolt11=outside, max_fee_msat=1_000, timeout_s=1)
    assert (failed.status, failed.failure_reason) == ("failed", "temporary_channel_failure")
    run("hang-next", "2")
    first = run("invoice", "--amount-msat", "1000")[-1]
    second = run("invoice", "--amount-msat", "1000")[-1]
    for bolt11 in (first, second):
        assert backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=0.1).status == (
            "pending"
        )
    first_hash = backend.decode_invoice(bolt11=first).payment_hash
    [line] = run("resolve", "--fail", first_hash)
    assert line.startswith(first_hash) and "failed timeout" in line
    [line] = run("resolve", "--succeed")
    second_hash = backend.decode_invoice(bolt11=second).payment_hash
    assert line.startswith(f"{second_hash} succeeded ")
    assert backend.lookup_payment(payment_hash=second_hash).status == PaymentStatus.SUCCEEDED
    with pytest.raises(CommandError, match="no hung payment"):
        run("resolve", "--succeed")


def test_down_and_up(backend):
    run("down")
    with pytest.raises(NodeUnreachable):
        backend.get_info()
    assert "DOWN" in "\n".join(run("status"))
    run("up")
    assert backend.get_info().alias == "default"


def test_node_is_required_when_several_are_registered(backend):
    other = register("second", "type=fake;alias=Second;fee_ppm=0")
    with pytest.raises(CommandError, match="--node"):
        run("down")
    run("down", "--node", "second")
    with pytest.raises(NodeUnreachable):
        other.get_info()
    assert backend.get_info().alias == "default"
    run("up", "--node", "second")
    assert other.get_info().alias == "Second"


def test_without_registered_nodes_the_name_is_fake(db):
    assert run("status") == [
        "network regtest, block height 100",
        "no simulated node has been used yet",
    ]
    run("hang-next")
    node = FakeNode.objects.get(name="fake")
    assert node.hang_next == 1


def test_node_created_by_the_command_uses_the_connection_string(db):
    Node.objects.create(name="shop", kind="fake", connection="type=fake;local_msat=777")
    run("fail-next")
    assert FakeNode.objects.get(name="shop").local_msat == 777


def test_status_lists_every_fake_node(db):
    for name in ("a", "b"):
        register(name).get_info()
    text = "\n".join(run("status"))
    assert "node a (up)" in text and "node b (up)" in text
