"""EclairBackend against an in-process HTTP server speaking Eclair's REST API."""

from __future__ import annotations

import json
import time

import pytest

from lightning.backends.base import (
    InvoiceState,
    Network,
    NodeAuthFailed,
    NodeRejected,
    NodeUnreachable,
    OutcomeUnknown,
    PaymentStatus,
)
from lightning.backends.eclair import EclairBackend, _StreamCursor
from lightning.connection import InvalidConnectionString, build_backend
from tests.fakes.eclair_server import FakeEclairNode
from tests.lightning.contract import BackendContract, preimage_matches

PASSWORD = "s3cr3t-eclair-api-password"


@pytest.fixture
def node():
    fake = FakeEclairNode(password=PASSWORD)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def journal_path(tmp_path):
    return str(tmp_path / "eclair-labels.jsonl")


def make_backend(
    node: FakeEclairNode,
    *,
    journal_path: str | None,
    password: str = PASSWORD,
    timeout_s: float = 2.0,
    extra: str = "",
) -> EclairBackend:
    connection = f"type=eclair;server={node.url};password={password}"
    if journal_path:
        connection += f";labelsfilepath={journal_path}"
    backend = build_backend(
        connection + extra, node_name="eclair-test", network=Network.REGTEST, timeout_s=timeout_s
    )
    assert isinstance(backend, EclairBackend)
    backend.stream_poll_s = 0.05
    backend.payment_poll_s = 0.02
    return backend


@pytest.fixture
def backend(node, journal_path):
    instance = make_backend(node, journal_path=journal_path)
    yield instance
    instance.close()


@pytest.fixture
def world(node):
    return node


@pytest.fixture
def bad_auth_backend(node, journal_path):
    instance = make_backend(node, journal_path=journal_path, password="wrong-" + PASSWORD)
    yield instance
    instance.close()


@pytest.fixture
def secrets():
    return [PASSWORD]


class TestEclairBackend(BackendContract):
    pass


# --- connection string -----------------------------------------------------------------------


def test_password_from_file_and_env(node, tmp_path, monkeypatch):
    secret_file = tmp_path / "eclair.password"
    secret_file.write_text(PASSWORD + "\n")
    from_file = build_backend(
        f"type=eclair;server={node.url};passwordfilepath={secret_file}",
        node_name="n",
        network=Network.REGTEST,
        timeout_s=2,
    )
    assert from_file.get_info().network == Network.REGTEST
    monkeypatch.setenv("ECLAIR_PW", PASSWORD)
    from_env = build_backend(
        f"type=eclair;server={node.url};password=env:ECLAIR_PW",
        node_name="n",
        network=Network.REGTEST,
        timeout_s=2,
    )
    assert from_env.get_info().network == Network.REGTEST
    assert PASSWORD not in repr(from_env)


def test_connection_string_errors(tmp_path):
    with pytest.raises(InvalidConnectionString):
        build_backend("type=eclair;password=x", node_name="n", network=Network.REGTEST, timeout_s=1)
    with pytest.raises(InvalidConnectionString):
        build_backend(
            "type=eclair;server=http://127.0.0.1:1",
            node_name="n",
            network=Network.REGTEST,
            timeout_s=1,
        )
    with pytest.raises(InvalidConnectionString) as raised:
        build_backend(
            f"type=eclair;server=http://127.0.0.1:1;passwordfilepath={tmp_path / 'missing'}",
            node_name="n",
            network=Network.REGTEST,
            timeout_s=1,
        )
    assert "cannot read passwordfilepath" in str(raised.value)


# --- settled-invoice stream --------------------------------------------------------------------


def _paid_invoice(backend, world, amount_msat: int, label: str, **pay) -> str:
    created = backend.create_invoice(amount_msat=amount_msat, memo=label, expiry_s=600, label=label)
    world.pay_from_outside(created.bolt11, **pay)
    return created.payment_hash


def _drain(backend, cursor, count: int):
    """The next `count` settlements after `cursor`, then their last cursor."""
    stream = backend.stream_settled_invoices(cursor=cursor)
    got = []
    try:
        for settlement in stream:
            got.append(settlement)
            if len(got) == count:
                break
    finally:
        stream.close()
    return got


def test_stream_resumes_after_node_restart_without_gaps_or_doubles(backend, world):
    first = [_paid_invoice(backend, world, 1_000 + i, f"s{i}") for i in range(3)]
    got = _drain(backend, None, 3)
    assert [s.invoice.payment_hash for s in got] == first
    assert all(s.invoice.state == InvoiceState.SETTLED for s in got)
    assert all(preimage_matches(s.invoice.preimage, s.invoice.payment_hash) for s in got)
    cursor = got[-1].cursor

    # The node goes away while the listener waits: the stream ends with NodeUnreachable.
    stream = backend.stream_settled_invoices(cursor=cursor)
    world.stop()
    try:
        with pytest.raises(NodeUnreachable):
            next(stream)
    finally:
        world.start()
    later = [_paid_invoice(backend, world, 5_000 + i, f"t{i}") for i in range(4)]
    resumed = _drain(backend, cursor, 4)
    assert [s.invoice.payment_hash for s in resumed] == later
    # Nothing more: the first three are not yielded again.
    assert _settlements_within(backend, resumed[-1].cursor, 0.3) == []


class _Idle(Exception):
    pass


def _settlements_within(backend, cursor, seconds: float = 0):
    """Everything the stream yields before it first waits for more."""

    def stop_waiting() -> None:
        raise _Idle

    backend._wait_for_more = stop_waiting
    got = []
    try:
        for settlement in backend.stream_settled_invoices(cursor=cursor):
            got.append(settlement)
    except _Idle:
        pass
    finally:
        del backend._wait_for_more
    return got


def test_stream_yields_late_audit_rows_within_grace_once(backend, world):
    a = _paid_invoice(backend, world, 1_000, "a")
    (first,) = _drain(backend, None, 1)
    assert first.invoice.payment_hash == a
    watermark = int(first.cursor.split(":")[1])
    # A payment received just before the watermark but written to the audit late.
    late = _paid_invoice(backend, world, 2_000, "late", received_ms=watermark - 1_000)
    b = _paid_invoice(backend, world, 3_000, "b")
    resumed = _drain(backend, first.cursor, 2)
    assert sorted(s.invoice.payment_hash for s in resumed) == sorted([late, b])
    assert _settlements_within(backend, resumed[-1].cursor, 0.3) == []


def test_stream_cursor_fits_the_column_and_handles_same_millisecond(backend, world):
    at = int(time.time() * 1000)
    hashes = [
        _paid_invoice(backend, world, 1_000 + i, f"m{i}", received_ms=at + i // 5)
        for i in range(30)
    ]
    got = _drain(backend, None, 30)
    assert sorted(s.invoice.payment_hash for s in got) == sorted(hashes)
    assert all(len(s.cursor) <= 200 for s in got)
    # Resuming from any cursor yields exactly the rest.
    for index in (0, 7, 17, 28):
        rest = _settlements_within(backend, got[index].cursor, 0.3)
        assert [s.invoice.payment_hash for s in rest] == [
            s.invoice.payment_hash for s in got[index + 1 :]
        ]


def test_stream_cursor_round_trip():
    cursor = _StreamCursor()
    for ms, h in [(1_000, "aa" * 32), (1_500, "bb" * 32), (9_000, "cc" * 32)]:
        assert cursor.is_new(ms, h)
        cursor.record(ms, h)
    encoded = cursor.encode()
    parsed = _StreamCursor.parse(encoded)
    assert not parsed.is_new(9_000, "cc" * 32)
    assert not parsed.is_new(1_500, "dd" * 32)  # before the grace window: already handled
    assert parsed.is_new(8_000, "dd" * 32)  # inside it and unlisted: a late arrival
    assert parsed.is_new(9_001, "ee" * 32)
    with pytest.raises(NodeRejected):
        _StreamCursor.parse("garbage")


def test_stream_cursor_when_many_share_one_millisecond():
    hashes = sorted(f"{i:02x}" * 32 for i in range(20))
    cursor = _StreamCursor()
    for h in hashes[:15]:  # yielded in hash order within the millisecond
        cursor.record(5_000, h)
    encoded = cursor.encode()
    assert len(encoded) <= 200
    parsed = _StreamCursor.parse(encoded)
    assert [h for h in hashes if parsed.is_new(5_000, h)] == hashes[15:]
    assert not parsed.is_new(4_999, hashes[19]) and parsed.is_new(5_001, hashes[0])


# --- invoices -------------------------------------------------------------------------------


def test_cancel_paid_invoice_is_rejected(backend, world):
    payment_hash = _paid_invoice(backend, world, 1_000, "paid")
    with pytest.raises(NodeRejected) as raised:
        backend.cancel_invoice(payment_hash=payment_hash)
    assert raised.value.reason == "already_paid"
    assert backend.lookup_invoice(payment_hash=payment_hash).state == InvoiceState.SETTLED


def test_invoice_label_is_not_stored_and_expired_is_canceled(backend, world):
    created = backend.create_invoice(amount_msat=1_000, memo="x", expiry_s=3600, label="lbl")
    status = backend.lookup_invoice(payment_hash=created.payment_hash)
    assert status.label == "" and status.state == InvoiceState.OPEN
    world.incoming[created.payment_hash].expires_ms = int(time.time() * 1000) - 1
    assert backend.lookup_invoice(payment_hash=created.payment_hash).state == InvoiceState.CANCELED


def test_decode_rejects_other_network(backend):
    mainnet = "lnbc2500u1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpu9qrsgquk0rl77nj30yxdy8j9vdx85fkpmdla2087ne0xh8nhedh8w27kyke0lp53ut353s06fv3qfegext0eh0ymjpf39tuven09sam30g4vgpfna3rh"
    with pytest.raises(NodeRejected) as raised:
        backend.decode_invoice(bolt11=mainnet)
    assert raised.value.reason == "invalid_invoice"
    with pytest.raises(NodeRejected) as raised:
        backend.decode_invoice(bolt11="lnbcrt1garbage")
    assert raised.value.reason == "invalid_invoice"


# --- payments ------------------------------------------------------------------------------


def test_pay_sends_fee_limit_in_whole_satoshis(backend, world):
    bolt11 = world.outside_invoice(amount_msat=100_000)
    # The routing fee is 200 msat, but a 999 msat limit is sent as 0 sat: no route.
    result = backend.pay_invoice(bolt11=bolt11, max_fee_msat=999, timeout_s=5)
    assert result.status == PaymentStatus.FAILED
    assert result.failure_reason == "no_route"


def test_pay_timeout_after_sending_is_outcome_unknown_then_resolves(node, journal_path):
    backend = make_backend(node, journal_path=journal_path, timeout_s=0.5)
    bolt11 = node.outside_invoice(amount_msat=20_000)
    payment_hash = backend.decode_invoice(bolt11=bolt11).payment_hash
    node.response_delay_s = 1.5
    node.slow_endpoints = {"payinvoice"}
    with pytest.raises(OutcomeUnknown) as raised:
        backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=5)
    assert PASSWORD not in str(raised.value)
    node.response_delay_s = 0
    # The node did start it: the answer comes from lookup_payment, never a retry.
    deadline = time.monotonic() + 5
    while backend.lookup_payment(payment_hash=payment_hash).status == PaymentStatus.PENDING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert backend.lookup_payment(payment_hash=payment_hash).status == PaymentStatus.SUCCEEDED
    # Paying it again is refused before anything is sent.
    with pytest.raises(NodeRejected) as again:
        backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=5)
    assert again.value.reason == "already_paid"
    assert node.requests.count("payinvoice") == 1


def test_pay_when_node_down_is_unreachable_not_unknown(backend, world):
    bolt11 = world.outside_invoice(amount_msat=20_000)
    world.stop()
    try:
        with pytest.raises(NodeUnreachable):
            backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=2)
    finally:
        world.start()


def test_pay_500_is_outcome_unknown_and_400_is_rejected(backend, world):
    bolt11 = world.outside_invoice(amount_msat=20_000)
    world.injected_errors["payinvoice"] = (500, "API call failed: check logs for more details")
    with pytest.raises(OutcomeUnknown):
        backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=2)
    other = world.outside_invoice(amount_msat=20_000)
    world.injected_errors["payinvoice"] = (400, "API call failed: check logs for more details")
    with pytest.raises(NodeRejected):
        backend.pay_invoice(bolt11=other, max_fee_msat=1_000, timeout_s=2)


def test_amountless_without_amount_and_expired_are_rejected_locally(backend, world):
    with pytest.raises(NodeRejected) as raised:
        backend.pay_invoice(
            bolt11=world.outside_invoice(amount_msat=None), max_fee_msat=1_000, timeout_s=2
        )
    assert raised.value.reason == "amount_required"
    assert "payinvoice" not in world.requests


def test_retry_after_failure_follows_the_new_attempt(backend, world):
    bolt11 = world.outside_invoice(amount_msat=10_000)
    world.fail_next_payment("no_route")
    assert backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=5).status == (
        PaymentStatus.FAILED
    )
    # The earlier failed attempt is still listed for the hash, but this one is followed.
    world.settle_delay_s = 0.2
    retried = backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=5)
    assert retried.status == PaymentStatus.SUCCEEDED
    assert backend.lookup_payment(payment_hash=retried.payment_hash).status == (
        PaymentStatus.SUCCEEDED
    )


def test_hung_payment_that_fails_reports_failed(backend, world):
    bolt11 = world.outside_invoice(amount_msat=10_000)
    world.hang_next_payment()
    result = backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=0.2)
    assert result.status == PaymentStatus.PENDING
    world.resolve_hung_payments(succeed=False)
    final = backend.lookup_payment(payment_hash=result.payment_hash)
    assert final.status == PaymentStatus.FAILED
    assert final.failure_reason == "incorrect_payment_details"


# --- errors and timeouts --------------------------------------------------------------------


def test_wrong_password_never_leaks(bad_auth_backend):
    with pytest.raises(NodeAuthFailed) as raised:
        bad_auth_backend.get_balances()
    assert PASSWORD not in str(raised.value) and "wrong-" not in str(raised.value)


def test_read_timeout_is_unreachable_within_timeout(node, journal_path):
    backend = make_backend(node, journal_path=journal_path, timeout_s=0.3)
    node.response_delay_s = 2
    started = time.monotonic()
    with pytest.raises(NodeUnreachable) as raised:
        backend.get_info()
    assert time.monotonic() - started < 1.5
    assert PASSWORD not in str(raised.value)
    node.response_delay_s = 0


def test_connection_refused_is_unreachable(node, journal_path):
    backend = make_backend(node, journal_path=journal_path)
    node.stop()
    try:
        with pytest.raises(NodeUnreachable) as raised:
            backend.get_balances()
        assert "cannot connect" in str(raised.value)
    finally:
        node.start()


def test_error_mapping_of_reads(backend, world):
    world.injected_errors["getinfo"] = (500, "API call failed: check logs for more details")
    with pytest.raises(NodeRejected) as raised:
        backend.get_info()
    assert raised.value.reason == "node_error"
    world.injected_errors["getinfo"] = (408, "request timed out")
    with pytest.raises(NodeUnreachable):
        backend.get_info()
    world.injected_errors["getinfo"] = (404, "The requested resource could not be found.")
    with pytest.raises(NodeRejected) as raised:
        backend.get_info()
    assert raised.value.reason == "unsupported"
    world.injected_errors["createinvoice"] = (503, "unavailable")
    with pytest.raises(OutcomeUnknown):
        backend.create_invoice(amount_msat=1, memo="", expiry_s=60, label="x")


# --- on chain ------------------------------------------------------------------------------


def test_send_many_is_one_transaction_per_output(backend, world):
    outside = world.new_wallet_address()
    world.wallet_keys.discard(outside)  # an address that is not ours
    ours = backend.new_address()
    sent = backend.send_many(
        outputs=[(outside, 30_000), (ours, 40_000)], target_conf=6, label="w-1"
    )
    txids = {tx.txid for tx in backend.list_transactions()}
    assert sent.txid in txids
    assert sorted(o.amount_sat for o in sent.outputs) == [30_000, 40_000]
    assert [o.ours for o in sorted(sent.outputs, key=lambda o: o.amount_sat)] == [False, True]
    assert sent.fee_sat == 2 * 10 * 141  # two transactions at Eclair's medium rate
    assert sent.label == "w-1"
    assert backend.lookup_transaction(txid=sent.txid).label == "w-1"
    with pytest.raises(NodeRejected) as raised:
        backend.send_many(outputs=[(outside, 1_000)], target_conf=6, label="w-1")
    assert raised.value.reason == "duplicate_label"


def test_label_recovered_after_crash_between_send_and_journal(backend, world, journal_path):
    address = backend.new_address()
    sent = backend.send_many(outputs=[(address, 12_345)], target_conf=2, label="crash-1")
    # Simulate a crash right after sendonchain returned: only the intent line survived.
    with open(journal_path) as handle:
        lines = [line for line in handle if json.loads(line)["op"] == "intent"]
    with open(journal_path, "w") as handle:
        handle.writelines(lines)
    recovered = backend.lookup_transaction(label="crash-1")
    assert recovered is not None and recovered.txid == sent.txid
    # The match is journalled: later lookups are stable.
    with open(journal_path) as handle:
        assert any(json.loads(line)["op"] == "sent" for line in handle)


def test_send_without_journal_is_refused_and_bad_address_rejected(node, backend, world):
    no_journal = make_backend(node, journal_path=None)
    with pytest.raises(NodeRejected) as raised:
        no_journal.send_many(outputs=[(backend.new_address(), 1_000)], target_conf=6, label="x")
    assert raised.value.reason == "unsupported"
    with pytest.raises(NodeRejected) as raised:
        backend.send_many(
            outputs=[("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", 1_000)],
            target_conf=6,
            label="y",
        )
    assert raised.value.reason == "invalid_address"
    with pytest.raises(NodeRejected) as raised:
        backend.send_many(outputs=[(backend.new_address(), 10**12)], target_conf=6, label="z")
    assert raised.value.reason == "insufficient_balance"
    assert "sendonchain" not in world.requests


def test_partial_send_many_is_outcome_unknown_and_aggregate_lists_what_was_paid(backend, world):
    first, second = backend.new_address(), backend.new_address()
    calls = {"n": 0}
    original = world.api_sendonchain

    def fail_second(form):
        calls["n"] += 1
        if calls["n"] == 2:
            from tests.fakes.eclair_server import ApiError

            raise ApiError(400, "API call failed: check logs for more details")
        return original(form)

    world.api_sendonchain = fail_second
    with pytest.raises(OutcomeUnknown) as raised:
        backend.send_many(outputs=[(first, 1_000), (second, 2_000)], target_conf=6, label="p-1")
    assert raised.value.reason == "partial"
    partial = backend.lookup_transaction(label="p-1")
    assert partial is not None
    assert {o.address for o in partial.outputs} == {first}


def test_estimate_fee_uses_configured_rate_and_send_uses_it(node, journal_path):
    backend = make_backend(node, journal_path=journal_path, extra=";feerate=3")
    address = backend.new_address()
    estimate = backend.estimate_fee(outputs=[(address, 5_000)], target_conf=1)
    assert estimate.sat_per_vbyte == 3 and estimate.fee_sat == 3 * (110 + 31)
    sent = backend.send_many(outputs=[(address, 5_000)], target_conf=1, label="rate")
    assert sent.fee_sat == 3 * 141
    world_mined = node.block_height
    node.mine(2)
    tx = backend.lookup_transaction(txid=sent.txid)
    assert tx.confirmations == 2 and tx.block_height == world_mined + 1
