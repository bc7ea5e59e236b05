"""ClnBackend against an in-process CLN speaking JSON-RPC on a unix socket (no database)."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time

import pytest

from lightning.backends.base import (
    InvoiceState,
    Network,
    NodeRejected,
    NodeUnreachable,
    OutcomeUnknown,
    PaymentStatus,
)
from lightning.backends.cln import ClnBackend
from lightning.connection import InvalidConnectionString, build_backend, parse_connection_string
from tests.fakes.cln_server import FakeClnServer
from tests.lightning.contract import BackendContract, next_settlement

RUNE = "sEcReTrUnE-0123456789abcdef_do_not_print=="


@pytest.fixture
def server():
    node = FakeClnServer()
    yield node
    node.close()


@pytest.fixture
def world(server):
    return server


@pytest.fixture
def rune_file(tmp_path):
    path = tmp_path / "rune"
    path.write_text(RUNE + "\n")
    return path


@pytest.fixture
def backend(server, rune_file):
    node = build_backend(
        f"type=clightning;server=unix://{server.socket_path};runefilepath={rune_file}",
        node_name="cln-test",
        network=Network.REGTEST,
        timeout_s=2.0,
    )
    assert isinstance(node, ClnBackend)
    node.wait_poll_s = 1  # keep long-polls short so a test never waits on one
    yield node
    node.close()


@pytest.fixture
def bad_auth_backend():
    return None  # the unix socket has no credentials; see test_wrong_socket_path


@pytest.fixture
def secrets():
    return [RUNE]


class TestClnBackend(BackendContract):
    pass


# --- connection strings ------------------------------------------------------------------


def test_connection_string_forms(rune_file):
    parsed = parse_connection_string(
        f"type=clightning;server=unix:///run/cln/lightning-rpc;rune={RUNE}"
    )
    node = ClnBackend.from_connection(
        parsed.params, node_name="n", network=Network.REGTEST, timeout_s=1
    )
    assert node.socket_path == "/run/cln/lightning-rpc"
    assert RUNE not in repr(node) and RUNE not in parsed.redacted()
    node = build_backend(
        f"type=cln;server=/run/cln/lightning-rpc;runefilepath={rune_file};addresstype=p2tr",
        node_name="n",
        network=Network.REGTEST,
        timeout_s=1,
    )
    assert node.address_type == "p2tr"
    for bad in (
        "type=clightning",
        "type=clightning;server=https://node:3010",
        "type=clightning;server=unix:///x;addresstype=p2pkh",
        "type=clightning;server=unix:///x;runefilepath=/no/such/rune",
    ):
        with pytest.raises(InvalidConnectionString):
            build_backend(bad, node_name="n", network=Network.REGTEST, timeout_s=1)


def test_wrong_socket_path_is_unreachable(tmp_path):
    node = build_backend(
        f"type=clightning;server=unix://{tmp_path}/missing-rpc",
        node_name="n",
        network=Network.REGTEST,
        timeout_s=1,
    )
    started = time.monotonic()
    with pytest.raises(NodeUnreachable):
        node.get_info()
    assert time.monotonic() - started < 1
    # Nothing reached the node, so a payment is certainly not sent.
    with pytest.raises(NodeUnreachable):
        node.pay_invoice(bolt11="lnbcrt1p0000000", max_fee_msat=1, timeout_s=1)
    with pytest.raises(NodeUnreachable):
        node.new_address()


def test_not_synced_reported(backend, world):
    assert backend.get_info().synced_to_chain
    world.synced = False
    assert not backend.get_info().synced_to_chain


# --- timeouts and lost replies -----------------------------------------------------------


def test_read_only_call_timeout_is_unreachable(backend, world):
    world.hooks.delay_s["getinfo"] = 3.0
    started = time.monotonic()
    with pytest.raises(NodeUnreachable):
        backend.get_info()
    assert time.monotonic() - started < backend.timeout_s + 0.5


def test_mutating_call_timeout_is_outcome_unknown_and_retry_is_idempotent(backend, world):
    world.hooks.delay_s["invoice"] = 3.0
    with pytest.raises(OutcomeUnknown):
        backend.create_invoice(amount_msat=9_000, memo="slow", expiry_s=600, label="slow-1")
    deadline = time.monotonic() + 5
    while "slow-1" not in world.invoices and time.monotonic() < deadline:
        time.sleep(0.05)  # the node did create it, late
    again = backend.create_invoice(amount_msat=9_000, memo="slow", expiry_s=600, label="slow-1")
    assert backend.lookup_invoice(payment_hash=again.payment_hash).label == "slow-1"
    with pytest.raises(NodeRejected) as raised:
        backend.create_invoice(amount_msat=1, memo="other", expiry_s=600, label="slow-1")
    assert raised.value.reason == "duplicate_label"


def test_connection_dropped_before_running_is_unknown_for_writes(backend, world):
    world.hooks.drop_before.add("newaddr")
    with pytest.raises(OutcomeUnknown):
        backend.new_address()
    world.hooks.drop_before.add("listfunds")
    with pytest.raises(NodeUnreachable):
        backend.get_balances()


def test_pay_reply_lost_is_confirmed_from_listpays(backend, world):
    bolt11 = world.outside_invoice(amount_msat=30_000)
    world.hooks.drop_after.add("pay")
    result = backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=5)
    assert result.status == PaymentStatus.SUCCEEDED
    assert result.fee_msat == world.routing_fee_msat(30_000)


def test_pay_dropped_before_any_attempt_is_outcome_unknown(backend, world):
    # The request went out but the node recorded nothing: we cannot say it was not sent.
    bolt11 = world.outside_invoice(amount_msat=30_000)
    world.hooks.drop_before.add("pay")
    with pytest.raises(OutcomeUnknown):
        backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=5)


def test_hung_payment_then_failure(backend, world):
    bolt11 = world.outside_invoice(amount_msat=10_000)
    world.hang_next_payment()
    result = backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=0.2)
    assert result.status == PaymentStatus.PENDING
    world.resolve_hung_payments(succeed=False)
    final = backend.lookup_payment(payment_hash=result.payment_hash)
    assert final.status == PaymentStatus.FAILED


# --- error mapping -----------------------------------------------------------------------


def test_pay_error_codes(backend, world):
    bolt11 = world.outside_invoice(amount_msat=100_000)
    expensive = backend.pay_invoice(bolt11=bolt11, max_fee_msat=1, timeout_s=5)
    assert expensive.status == PaymentStatus.FAILED
    assert expensive.failure_reason == "fee_limit_exceeded"
    # CLN kept no attempt; our own record keeps lookup consistent.
    looked_up = backend.lookup_payment(payment_hash=expensive.payment_hash)
    assert looked_up.status == PaymentStatus.FAILED
    assert looked_up.failure_reason == "fee_limit_exceeded"

    unknown = world.outside_invoice(amount_msat=5_000)
    world.outside_preimages.clear()  # the payee no longer knows the hash
    result = backend.pay_invoice(bolt11=unknown, max_fee_msat=1_000, timeout_s=5)
    assert result.status == PaymentStatus.FAILED
    assert result.failure_reason == "destination_rejected"

    with pytest.raises(NodeRejected) as raised:  # amount for an invoice that has one
        backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=5, amount_msat=5)
    assert raised.value.reason == "invalid_invoice"

    world.hooks.errors["pay"] = (-1, "Catchall nonspecific error")
    fresh = world.outside_invoice(amount_msat=5_000)
    with pytest.raises(NodeRejected):  # refused with nothing recorded: certainly not sent
        backend.pay_invoice(bolt11=fresh, max_fee_msat=1_000, timeout_s=5)


def test_wrong_network_invoice_refused_before_asking_node(backend, world):
    world.calls.clear()
    mainnet = "lnbc10u1p3xnhl2pp5" + "q" * 40
    for call in (
        lambda: backend.decode_invoice(bolt11=mainnet),
        lambda: backend.pay_invoice(bolt11=mainnet, max_fee_msat=10, timeout_s=1),
    ):
        with pytest.raises(NodeRejected) as raised:
            call()
        assert raised.value.reason == "invalid_invoice"
    assert world.calls == []
    with pytest.raises(NodeRejected) as raised:
        backend.decode_invoice(bolt11="lnbcrt1garbage")
    assert raised.value.reason == "invalid_invoice"


def test_cancel_settled_invoice_is_rejected(backend, world):
    created = backend.create_invoice(amount_msat=1_000, memo="x", expiry_s=600, label="paid-1")
    world.pay_from_outside(created.bolt11)
    with pytest.raises(NodeRejected) as raised:
        backend.cancel_invoice(payment_hash=created.payment_hash)
    assert raised.value.reason == "already_paid"
    assert backend.lookup_invoice(payment_hash=created.payment_hash).state == InvoiceState.SETTLED
    with pytest.raises(NodeRejected) as raised:
        backend.cancel_invoice(payment_hash="ab" * 32)
    assert raised.value.reason == "not_found"


def test_cancel_is_idempotent_and_survives_listing(backend):
    created = backend.create_invoice(amount_msat=1_000, memo="x", expiry_s=600, label="c-1")
    backend.cancel_invoice(payment_hash=created.payment_hash)
    backend.cancel_invoice(payment_hash=created.payment_hash)
    status = backend.lookup_invoice(payment_hash=created.payment_hash)
    assert status.state == InvoiceState.CANCELED and status.label == "c-1"


def test_expired_invoice_is_canceled(backend):
    created = backend.create_invoice(amount_msat=1_000, memo="x", expiry_s=1, label="exp-1")
    time.sleep(1.1)
    state = backend.lookup_invoice(payment_hash=created.payment_hash).state
    assert state == InvoiceState.CANCELED
    backend.cancel_invoice(payment_hash=created.payment_hash)  # nothing to do


def test_onchain_errors(backend):
    address = backend.new_address()
    with pytest.raises(NodeRejected) as raised:
        backend.send_many(outputs=[(address, 10**12)], target_conf=6, label="too-much")
    assert raised.value.reason == "insufficient_balance"
    assert backend.lookup_transaction(label="too-much") is None
    mainnet = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
    with pytest.raises(NodeRejected) as raised:
        backend.send_many(outputs=[(mainnet, 10_000)], target_conf=6, label="bad-addr")
    assert raised.value.reason == "invalid_address"


def test_lookup_invoice_malformed_hash_is_not_found(backend):
    with pytest.raises(NodeRejected) as raised:
        backend.lookup_invoice(payment_hash="xyz")
    assert raised.value.reason == "not_found"


# --- description hash ---------------------------------------------------------------------


def test_description_hash_needs_its_text(backend):
    metadata = '[["text/plain","pay alice"]]'
    digest = hashlib.sha256(metadata.encode()).digest()
    with pytest.raises(NodeRejected) as raised:
        backend.create_invoice(
            amount_msat=1_000, memo="", expiry_s=600, label="dh-1", description_hash=digest
        )
    assert raised.value.reason == "unsupported"
    created = backend.create_invoice(
        amount_msat=1_000, memo=metadata, expiry_s=600, label="dh-2", description_hash=digest
    )
    decoded = backend.decode_invoice(bolt11=created.bolt11)
    assert decoded.description_hash == digest.hex() and decoded.description == ""


# --- the settlement stream ----------------------------------------------------------------


def _settle(backend, world, label: str) -> str:
    created = backend.create_invoice(amount_msat=1_000, memo=label, expiry_s=600, label=label)
    world.pay_from_outside(created.bolt11)
    return created.payment_hash


def test_stream_survives_restart_without_missing_or_doubling(backend, world):
    first = _settle(backend, world, "s-1")
    settlement = next_settlement(backend, None)
    assert settlement.invoice.payment_hash == first
    cursor = settlement.cursor

    # A reader blocked in waitanyinvoice sees the drop as NodeUnreachable.
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            next_settlement(backend_for_thread, cursor)
        except BaseException as exc:
            outcome.append(exc)

    backend_for_thread = ClnBackend(
        node_name="t", network=Network.REGTEST, timeout_s=2, socket_path=world.socket_path
    )
    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.3)
    world.stop()
    reader.join(timeout=5)
    assert not reader.is_alive()
    assert isinstance(outcome[0], NodeUnreachable)
    world.start()

    second, third = _settle(backend, world, "s-2"), _settle(backend, world, "s-3")
    seen = []
    stream = backend.stream_settled_invoices(cursor=cursor)
    for item in stream:
        seen.append(item)
        if len(seen) == 2:
            break
    stream.close()
    assert [s.invoice.payment_hash for s in seen] == [second, third]
    fourth = _settle(backend, world, "s-4")
    resumed = next_settlement(backend, seen[-1].cursor)
    assert resumed.invoice.payment_hash == fourth
    assert int(resumed.cursor) == int(seen[-1].cursor) + 1


def test_stream_waits_across_poll_timeouts(backend, world):
    backend.wait_poll_s = 1
    cursor = None
    threading.Timer(1.5, lambda: _settle(backend_two, world, "late-1")).start()
    backend_two = ClnBackend(
        node_name="t", network=Network.REGTEST, timeout_s=2, socket_path=world.socket_path
    )
    settlement = next_settlement(backend, cursor, timeout_s=10)
    assert settlement.invoice.label == "late-1"


# --- on chain: label recovery -------------------------------------------------------------


def test_send_many_reply_lost_is_recovered_by_label(backend, world):
    address = backend.new_address()
    world.hooks.drop_after.add("multiwithdraw")
    with pytest.raises(OutcomeUnknown):
        backend.send_many(outputs=[(address, 12_345)], target_conf=6, label="lost-1")
    found = backend.lookup_transaction(label="lost-1")
    assert found is not None and found.label == "lost-1"
    assert any(o.address == address and o.amount_sat == 12_345 for o in found.outputs)
    assert found.fee_sat and found.fee_sat > 0
    # A retry with the same label does not send twice.
    with pytest.raises(NodeRejected) as raised:
        backend.send_many(outputs=[(address, 12_345)], target_conf=6, label="lost-1")
    assert raised.value.reason == "duplicate_label"
    listed = {t.txid: t for t in backend.list_transactions()}
    assert listed[found.txid].label == "lost-1"


def test_identical_lost_batches_claim_distinct_transactions(backend, world):
    address = backend.new_address()
    txids = set()
    for label in ("twin-a", "twin-b"):
        world.hooks.drop_after.add("multiwithdraw")
        with pytest.raises(OutcomeUnknown):
            backend.send_many(outputs=[(address, 5_000)], target_conf=6, label=label)
        found = backend.lookup_transaction(label=label)
        assert found is not None
        txids.add(found.txid)
    assert len(txids) == 2


def test_send_many_broadcast_not_happened_is_none(backend, world):
    address = backend.new_address()
    world.hooks.drop_before.add("multiwithdraw")
    with pytest.raises(OutcomeUnknown):
        backend.send_many(outputs=[(address, 7_000)], target_conf=6, label="never-1")
    assert backend.lookup_transaction(label="never-1") is None
    sent = backend.send_many(outputs=[(address, 7_000)], target_conf=6, label="never-1")
    assert backend.lookup_transaction(label="never-1").txid == sent.txid


def test_send_many_reports_the_txid_when_the_node_goes_away_after_broadcasting(backend, world):
    # The details read after multiwithdraw fail: the txid is still the answer (raising would
    # tell the caller nothing was sent, and it would pay the outputs again).
    address = backend.new_address()
    multiwithdraw = world.rpc_multiwithdraw

    def then_gone(**params):
        result = multiwithdraw(**params)
        world.hooks.drop_before.update({"datastore", "getinfo"})
        return result

    world.rpc_multiwithdraw = then_gone
    sent = backend.send_many(outputs=[(address, 8_000)], target_conf=6, label="gone-1")
    assert sent.txid in world.txs and sent.label == "gone-1" and sent.fee_sat is None
    assert [(o.address, o.amount_sat) for o in sent.outputs] == [(address, 8_000)]
    assert backend.lookup_transaction(label="gone-1").txid == sent.txid


def test_balances_follow_payments_and_chain(backend, world):
    before = backend.get_balances()
    created = backend.create_invoice(amount_msat=50_000, memo="b", expiry_s=600, label="bal-1")
    world.pay_from_outside(created.bolt11)
    after = backend.get_balances()
    assert after.channel_local_msat == before.channel_local_msat + 50_000
    assert after.channel_remote_msat == before.channel_remote_msat - 50_000
    world.receive_onchain(address=backend.new_address(), amount_sat=40_000)
    assert backend.get_balances().onchain_unconfirmed_sat == before.onchain_unconfirmed_sat + 40_000
    world.mine(1)
    assert backend.get_balances().onchain_confirmed_sat == before.onchain_confirmed_sat + 40_000


def test_socket_path_is_short_enough():
    node = FakeClnServer()
    try:
        assert len(node.socket_path) < 100 and os.path.exists(node.socket_path)
    finally:
        node.close()


def test_debug_log_names_methods_without_payloads(backend, world, caplog):
    bolt11 = world.outside_invoice(amount_msat=20_000)
    with caplog.at_level(logging.DEBUG, logger="lightning.backends.cln.rpc"):
        result = backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=5)
    assert "call pay" in caplog.text and "reply pay" in caplog.text
    assert result.preimage not in caplog.text and bolt11 not in caplog.text
