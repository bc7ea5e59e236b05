"""LndBackend against an in-process gRPC server built from LND's own .proto files."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from lightning.backends.base import (
    InvoiceState,
    LightningError,
    Network,
    NodeAuthFailed,
    NodeRejected,
    NodeUnreachable,
    OutcomeUnknown,
    PaymentStatus,
)
from lightning.backends.lnd import LndBackend
from lightning.connection import InvalidConnectionString, build_backend, parse_connection_string
from tests.fakes.lnd_server import FakeLndServer, make_tls_cert, sign_invoice
from tests.lightning.contract import BackendContract, next_settlement

TIMEOUT_S = 3.0


def connect(
    server: FakeLndServer,
    tmp_path: Path,
    *,
    macaroon_hex: str | None = None,
    cert_pem: bytes | None = None,
    timeout_s: float = TIMEOUT_S,
) -> LndBackend:
    cert = tmp_path / f"tls-{os.urandom(4).hex()}.cert"
    cert.write_bytes(cert_pem or server.cert_pem)
    macaroon = tmp_path / f"admin-{os.urandom(4).hex()}.macaroon"
    macaroon.write_bytes(bytes.fromhex(macaroon_hex or server.macaroon_hex))
    backend = build_backend(
        server.connection_string(cert_path=str(cert), macaroon_path=str(macaroon)),
        node_name="lnd-test",
        network=Network(server.node.network),
        timeout_s=timeout_s,
    )
    assert isinstance(backend, LndBackend)
    return backend


@pytest.fixture
def lnd_server():
    server = FakeLndServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def backend(lnd_server, tmp_path):
    backend = connect(lnd_server, tmp_path)
    yield backend
    backend.close()


@pytest.fixture
def world(lnd_server):
    return lnd_server


BAD_MACAROON = os.urandom(32).hex()


@pytest.fixture
def bad_auth_backend(lnd_server, tmp_path):
    backend = connect(lnd_server, tmp_path, macaroon_hex=BAD_MACAROON)
    yield backend
    backend.close()


@pytest.fixture
def secrets(lnd_server):
    return [lnd_server.macaroon_hex, BAD_MACAROON]


class TestLndBackend(BackendContract):
    pass


# --- connection strings ----------------------------------------------------------------------


def test_connection_string_forms(lnd_server, tmp_path, monkeypatch):
    cert = tmp_path / "tls.cert"
    cert.write_bytes(lnd_server.cert_pem)
    monkeypatch.setenv("LND_TEST_MACAROON", lnd_server.macaroon_hex)
    for connection in (
        # bare host:port, macaroon as hex
        f"type=lnd;server={lnd_server.address};macaroon={lnd_server.macaroon_hex};"
        f"certfilepath={cert}",
        # https:// with a trailing slash, macaroon from the environment
        f"type=lnd-grpc;server=https://{lnd_server.address}/;macaroon=env:LND_TEST_MACAROON;"
        f"certfilepath={cert}",
    ):
        backend = build_backend(
            connection, node_name="n", network=Network.REGTEST, timeout_s=TIMEOUT_S
        )
        try:
            assert backend.get_info().pubkey == lnd_server.node.pubkey
            assert lnd_server.macaroon_hex not in repr(backend)
        finally:
            backend.close()
        assert lnd_server.macaroon_hex not in parse_connection_string(connection).redacted()


@pytest.mark.parametrize(
    ("connection", "message"),
    [
        ("type=lnd;macaroon=00", "server"),
        ("type=lnd;server=h:1", "macaroon"),
        ("type=lnd;server=http://h:1;macaroon=00", "TLS"),
        ("type=lnd;server=h:1;macaroon=zz-not-hex", "hex"),
        ("type=lnd;server=h:1;macaroonfilepath=/nonexistent/admin.macaroon", "macaroon file"),
        ("type=lnd;server=h:1;macaroon=env:LND_TEST_UNSET_VARIABLE", "LND_TEST_UNSET_VARIABLE"),
    ],
)
def test_bad_connection_strings(connection, message):
    with pytest.raises(InvalidConnectionString, match=message) as raised:
        build_backend(connection, node_name="n", network=Network.REGTEST, timeout_s=1)
    assert "zz-not-hex" not in str(raised.value)


def test_default_port():
    backend = LndBackend.from_connection(
        {"server": "https://node.example", "macaroon": "00"},
        node_name="n",
        network=Network.REGTEST,
        timeout_s=1,
    )
    assert backend.server == "node.example:10009"
    backend.close()


# --- credentials -------------------------------------------------------------------------------


def test_lnd_style_macaroon_error_is_auth_failure(tmp_path):
    # Real LND answers a bad macaroon with UNKNOWN and the macaroon library's text.
    server = FakeLndServer(lnd_style_auth_errors=True)
    server.start()
    backend = connect(server, tmp_path, macaroon_hex=BAD_MACAROON)
    try:
        with pytest.raises(NodeAuthFailed) as raised:
            backend.get_info()
        assert raised.value.reason == "macaroon"
        assert BAD_MACAROON not in str(raised.value)
        assert server.macaroon_hex not in str(raised.value)
    finally:
        backend.close()
        server.stop()


def test_wrong_tls_certificate_is_auth_failure(lnd_server, tmp_path):
    # Decision: a certificate that does not verify is NodeAuthFailed (the node's identity is
    # not proven; retrying will not help), not NodeUnreachable. Nothing was sent.
    other_cert, _ = make_tls_cert()
    backend = connect(lnd_server, tmp_path, cert_pem=other_cert)
    try:
        started = time.monotonic()
        with pytest.raises(NodeAuthFailed) as raised:
            backend.get_info()
        assert raised.value.reason == "tls_certificate"
        assert time.monotonic() - started < TIMEOUT_S  # not retried until the deadline
        assert lnd_server.macaroon_hex not in str(raised.value)
        bolt11 = lnd_server.outside_invoice(amount_msat=1_000)
        with pytest.raises(NodeAuthFailed):
            backend.pay_invoice(bolt11=bolt11, max_fee_msat=100, timeout_s=2)
        assert not lnd_server.node.payments
    finally:
        backend.close()


# --- timeouts and dropped connections -----------------------------------------------------------


def test_slow_node_times_out_as_unreachable(lnd_server, tmp_path):
    backend = connect(lnd_server, tmp_path, timeout_s=0.5)
    lnd_server.node.delay_s = 2.0
    try:
        started = time.monotonic()
        with pytest.raises(NodeUnreachable):
            backend.get_info()
        assert time.monotonic() - started < 1.5
    finally:
        lnd_server.node.delay_s = 0.0
        backend.close()


def test_send_many_timeout_is_outcome_unknown_and_recoverable_by_label(lnd_server, tmp_path):
    backend = connect(lnd_server, tmp_path, timeout_s=0.5)
    address = backend.new_address()
    lnd_server.node.delay_s = 1.0
    try:
        with pytest.raises(OutcomeUnknown):
            backend.send_many(outputs=[(address, 10_000)], target_conf=6, label="slow-batch")
    finally:
        lnd_server.node.delay_s = 0.0
    deadline = time.monotonic() + 5
    found = None
    while found is None and time.monotonic() < deadline:  # the node carried it out after all
        found = backend.lookup_transaction(label="slow-batch")
        time.sleep(0.1)
    assert found is not None and found.label == "slow-batch"
    backend.close()


def test_pay_with_node_down_is_unreachable_and_not_sent(backend, world):
    bolt11 = world.outside_invoice(amount_msat=5_000)
    world.stop()
    try:
        with pytest.raises(NodeUnreachable):
            backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=1)
    finally:
        world.start()
    assert not world.node.payments


def test_connection_drop_mid_payment_is_pending_never_failed(backend, world):
    bolt11 = world.outside_invoice(amount_msat=10_000)
    payment_hash = backend.decode_invoice(bolt11=bolt11).payment_hash
    world.hang_next_payment()
    outcome: list[object] = []

    def pay() -> None:
        try:
            outcome.append(backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=20))
        except LightningError as exc:
            outcome.append(exc)

    payer = threading.Thread(target=pay)
    payer.start()
    deadline = time.monotonic() + 5
    while payment_hash not in world.node.payments and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # let the first in-flight update reach the backend
    world.stop()
    payer.join(timeout=10)
    world.start()
    # PENDING when LND's acceptance arrived before the drop, else OutcomeUnknown; never FAILED.
    assert len(outcome) == 1
    result = outcome[0]
    assert isinstance(result, OutcomeUnknown) or result.status == PaymentStatus.PENDING
    world.resolve_hung_payments(succeed=True)
    assert backend.lookup_payment(payment_hash=payment_hash).status == PaymentStatus.SUCCEEDED


# --- payments: refusals and repeats --------------------------------------------------------------


def test_paying_twice_reports_the_existing_payment(backend, world):
    bolt11 = world.outside_invoice(amount_msat=30_000)
    first = backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=5)
    assert first.status == PaymentStatus.SUCCEEDED
    again = backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=5)
    assert again.status == PaymentStatus.SUCCEEDED
    assert again.preimage == first.preimage
    assert world.node.local_msat == 5_000_000_000 - 30_000 - world.routing_fee_msat(30_000)


def test_expired_invoice_is_rejected(backend, world):
    node = world.node
    bolt11 = sign_invoice(
        key=node.outside_key,
        network="regtest",
        payment_hash=os.urandom(32),
        amount_msat=1_000,
        memo="old",
        description_hash=b"",
        expiry=60,
        timestamp=int(time.time()) - 3600,
    )
    with pytest.raises(NodeRejected) as raised:
        backend.pay_invoice(bolt11=bolt11, max_fee_msat=100, timeout_s=2)
    assert raised.value.reason == "invoice_expired"


def test_other_network_invoice_is_rejected_before_the_node(backend):
    mainnet = sign_invoice(
        key=FakeLndServer().node.outside_key,
        network="mainnet",
        payment_hash=os.urandom(32),
        amount_msat=1_000,
        memo="x",
        description_hash=b"",
        expiry=600,
        timestamp=int(time.time()),
    )
    with pytest.raises(NodeRejected) as raised:
        backend.pay_invoice(bolt11=mainnet, max_fee_msat=100, timeout_s=2)
    assert raised.value.reason == "invalid_invoice"


def test_amount_for_fixed_amount_invoice_is_rejected(backend, world):
    bolt11 = world.outside_invoice(amount_msat=10_000)
    with pytest.raises(NodeRejected) as raised:
        backend.pay_invoice(bolt11=bolt11, amount_msat=20_000, max_fee_msat=100, timeout_s=2)
    assert raised.value.reason == "invalid_amount"


def test_fee_above_limit_fails_as_reported_by_lnd(backend, world):
    bolt11 = world.outside_invoice(amount_msat=1_000_000)
    result = backend.pay_invoice(bolt11=bolt11, max_fee_msat=10, timeout_s=5)
    assert result.status == PaymentStatus.FAILED
    assert result.failure_reason == "no_route"


# --- invoices and the settlement stream ------------------------------------------------------------


def test_cancel_settled_invoice_is_rejected(backend, world):
    created = backend.create_invoice(amount_msat=1_000, memo="m", expiry_s=600, label="l")
    world.pay_from_outside(created.bolt11)
    with pytest.raises(NodeRejected) as raised:
        backend.cancel_invoice(payment_hash=created.payment_hash)
    assert raised.value.reason == "already_paid"
    status = backend.lookup_invoice(payment_hash=created.payment_hash)
    assert status.state == InvoiceState.SETTLED and status.label == "m"
    assert status.settled_at is not None


def test_stream_resumes_after_restart_without_missing_or_doubling(backend, world):
    invoices = [
        backend.create_invoice(amount_msat=1_000 * (n + 1), memo=f"i{n}", expiry_s=600, label="")
        for n in range(5)
    ]
    world.pay_from_outside(invoices[0].bolt11)
    world.pay_from_outside(invoices[1].bolt11)
    seen: list[str] = []
    cursor = None
    stream = backend.stream_settled_invoices(cursor=cursor)
    with pytest.raises(NodeUnreachable):
        for settlement in stream:
            seen.append(settlement.invoice.payment_hash)
            cursor = settlement.cursor
            if len(seen) == 2:
                world.pay_from_outside(invoices[2].bolt11)
            if len(seen) == 3:
                world.stop()  # the connection drops mid-stream
                world.pay_from_outside(invoices[3].bolt11)  # settles while we are away
    world.start()
    stream = backend.stream_settled_invoices(cursor=cursor)
    try:
        for settlement in stream:
            seen.append(settlement.invoice.payment_hash)
            cursor = settlement.cursor
            if len(seen) == 4:
                world.pay_from_outside(invoices[4].bolt11)
            if len(seen) == 5:
                break
    finally:
        stream.close()
    assert seen == [i.payment_hash for i in invoices]
    assert cursor == "5"


def test_stream_fills_a_missed_event_from_list_invoices(backend, world):
    first = backend.create_invoice(amount_msat=1_000, memo="a", expiry_s=600, label="")
    second = backend.create_invoice(amount_msat=2_000, memo="b", expiry_s=600, label="")
    world.pay_from_outside(first.bolt11)
    cursor = next_settlement(backend, None).cursor
    third = backend.create_invoice(amount_msat=3_000, memo="c", expiry_s=600, label="")
    stream = backend.stream_settled_invoices(cursor=cursor)
    got = []
    try:
        world.node.drop_settle_events = 1
        threading.Timer(0.2, world.pay_from_outside, args=(second.bolt11,)).start()
        threading.Timer(0.4, world.pay_from_outside, args=(third.bolt11,)).start()
        for settlement in stream:
            got.append((settlement.invoice.payment_hash, settlement.cursor))
            if len(got) == 2:
                break
    finally:
        stream.close()
    assert got == [(second.payment_hash, "2"), (third.payment_hash, "3")]


def test_stream_on_a_down_node_raises_unreachable(backend, world):
    world.stop()
    try:
        with pytest.raises(NodeUnreachable):
            next(iter(backend.stream_settled_invoices(cursor="7")))
    finally:
        world.start()


# --- on chain ---------------------------------------------------------------------------------------


def test_onchain_refusals(backend):
    with pytest.raises(NodeRejected) as raised:
        backend.send_many(outputs=[("bcrt1qnotanaddress", 10_000)], target_conf=6, label="x")
    assert raised.value.reason == "invalid_address"
    mine = backend.new_address()
    with pytest.raises(NodeRejected) as raised:
        backend.send_many(outputs=[(mine, 10**15)], target_conf=6, label="y")
    assert raised.value.reason == "insufficient_balance"
    with pytest.raises(NodeRejected):
        backend.send_many(outputs=[(mine, 1_000), (mine, 2_000)], target_conf=6, label="z")
    assert backend.lookup_transaction(label="y") is None


def test_incoming_transaction_has_no_fee_and_counts_confirmations(backend, world):
    address = backend.new_address()
    txid = world.receive_onchain(address=address, amount_sat=12_345)
    pending = backend.lookup_transaction(txid=txid)
    assert pending is not None and pending.confirmations == 0 and pending.fee_sat is None
    assert pending.outputs[0].ours
    assert txid not in {t.txid for t in backend.list_transactions(min_confirmations=1)}
    world.mine(2)
    confirmed = backend.lookup_transaction(txid=txid)
    assert confirmed.confirmations == 2 and confirmed.block_height is not None
    assert backend.get_balances().onchain_confirmed_sat >= 12_345


def test_testnet_node_reports_testnet(tmp_path):
    server = FakeLndServer(network="testnet")
    server.start()
    backend = connect(server, tmp_path)
    try:
        assert backend.get_info().network == Network.TESTNET
        created = backend.create_invoice(amount_msat=1_000, memo="t", expiry_s=60, label="")
        assert created.bolt11.startswith("lntb1")
        assert backend.decode_invoice(bolt11=created.bolt11).network == Network.TESTNET
    finally:
        backend.close()
        server.stop()


def test_errors_are_lightning_errors_without_secrets(backend, lnd_server):
    with pytest.raises(LightningError) as raised:
        backend.cancel_invoice(payment_hash="ab" * 32)
    assert raised.value.reason == "not_found"
    assert lnd_server.macaroon_hex not in str(raised.value)
