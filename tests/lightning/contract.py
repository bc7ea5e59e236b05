"""The interface test suite every Lightning backend passes against its protocol-speaking fake.

A backend's test module subclasses `BackendContract` and provides these fixtures:
- `backend`: a LightningBackend connected to the fake node server;
- `world`: an object implementing `World` that drives the fake node's outside world;
- `bad_auth_backend`: a backend with wrong credentials (or None when the kind has no auth);
- `secrets`: strings that must never appear in an error message.
"""

from __future__ import annotations

import hashlib
import time
from typing import Protocol

import pytest

from lightning.backends.base import (
    BOLT11_PREFIX,
    InvoiceState,
    LightningBackend,
    LightningError,
    NodeAuthFailed,
    NodeRejected,
    NodeUnreachable,
    PaymentStatus,
)


class World(Protocol):
    def pay_from_outside(self, bolt11: str, *, amount_msat: int | None = None) -> None:
        """An outside payer pays one of our node's invoices."""

    def outside_invoice(self, *, amount_msat: int | None, memo: str = "") -> str:
        """A BOLT 11 invoice of an outside payee our node can pay."""

    def routing_fee_msat(self, amount_msat: int) -> int:
        """Fee the outside world charges to route `amount_msat`."""

    def fail_next_payment(self, reason: str = "no_route") -> None: ...

    def hang_next_payment(self) -> None: ...

    def resolve_hung_payments(self, *, succeed: bool) -> None: ...

    def mine(self, blocks: int) -> None: ...

    def receive_onchain(self, *, address: str, amount_sat: int) -> str:
        """An outside wallet pays `address`; returns the txid (unconfirmed until mined)."""

    def stop(self) -> None:
        """Make the node unreachable (server down)."""

    def start(self) -> None:
        """Bring it back, with its state."""


def preimage_matches(preimage_hex: str, payment_hash_hex: str) -> bool:
    return hashlib.sha256(bytes.fromhex(preimage_hex)).hexdigest() == payment_hash_hex


def next_settlement(backend: LightningBackend, cursor: str | None, timeout_s: float = 10.0):
    """First settlement after `cursor` (the stream is a blocking generator)."""
    deadline = time.monotonic() + timeout_s
    stream = backend.stream_settled_invoices(cursor=cursor)
    try:
        for settlement in stream:
            return settlement
            if time.monotonic() > deadline:  # pragma: no cover
                break
    finally:
        stream.close()
    raise AssertionError("no settlement arrived")


class BackendContract:
    network = "regtest"

    # --- info ----------------------------------------------------------------------------
    def test_info(self, backend):
        info = backend.get_info()
        assert info.network == self.network
        assert len(info.pubkey) == 66 and bytes.fromhex(info.pubkey)
        assert info.block_height >= 0

    def test_balances_are_integers(self, backend):
        balances = backend.get_balances()
        for value in (
            balances.channel_local_msat,
            balances.channel_remote_msat,
            balances.onchain_confirmed_sat,
            balances.onchain_unconfirmed_sat,
        ):
            assert isinstance(value, int) and value >= 0

    # --- receiving -----------------------------------------------------------------------
    def test_create_lookup_and_decode_invoice(self, backend):
        created = backend.create_invoice(
            amount_msat=150_000, memo="deposit for alice", expiry_s=600, label="contract-1"
        )
        assert created.bolt11.startswith(BOLT11_PREFIX[self.network])
        assert created.amount_msat == 150_000
        status = backend.lookup_invoice(payment_hash=created.payment_hash)
        assert status.state == InvoiceState.OPEN
        assert status.amount_received_msat == 0
        decoded = backend.decode_invoice(bolt11=created.bolt11)
        assert decoded.payment_hash == created.payment_hash
        assert decoded.amount_msat == 150_000
        assert decoded.description == "deposit for alice"
        assert abs((decoded.expires_at - created.expires_at).total_seconds()) <= 1

    def test_amountless_invoice(self, backend):
        created = backend.create_invoice(
            amount_msat=None, memo="any", expiry_s=600, label="contract-2"
        )
        assert created.amount_msat is None
        assert backend.decode_invoice(bolt11=created.bolt11).amount_msat is None

    def test_description_hash_invoice(self, backend):
        metadata = '[["text/plain","lnurl"]]'  # LNURL passes the hashed text as memo
        digest = hashlib.sha256(metadata.encode()).digest()
        created = backend.create_invoice(
            amount_msat=1_000,
            memo=metadata,
            expiry_s=600,
            label="contract-3",
            description_hash=digest,
        )
        assert backend.decode_invoice(bolt11=created.bolt11).description_hash == digest.hex()

    def test_outside_payment_settles_with_preimage(self, backend, world):
        created = backend.create_invoice(
            amount_msat=21_000, memo="m", expiry_s=600, label="contract-4"
        )
        world.pay_from_outside(created.bolt11)
        status = backend.lookup_invoice(payment_hash=created.payment_hash)
        assert status.state == InvoiceState.SETTLED
        assert status.amount_received_msat == 21_000
        if status.preimage is not None:
            assert preimage_matches(status.preimage, created.payment_hash)

    def test_overpaid_amountless_reports_amount_received(self, backend, world):
        created = backend.create_invoice(
            amount_msat=None, memo="tip", expiry_s=600, label="contract-5"
        )
        world.pay_from_outside(created.bolt11, amount_msat=777_000)
        assert (
            backend.lookup_invoice(payment_hash=created.payment_hash).amount_received_msat
            == 777_000
        )

    def test_stream_yields_settlements_and_resumes_from_cursor(self, backend, world):
        first = backend.create_invoice(
            amount_msat=1_000, memo="a", expiry_s=600, label="contract-6a"
        )
        world.pay_from_outside(first.bolt11)
        settlement = None
        cursor = None
        # Read everything settled so far; the last one is ours.
        while True:
            settlement = next_settlement(backend, cursor)
            cursor = settlement.cursor
            if settlement.invoice.payment_hash == first.payment_hash:
                break
        assert settlement.invoice.amount_received_msat == 1_000
        second = backend.create_invoice(
            amount_msat=2_000, memo="b", expiry_s=600, label="contract-6b"
        )
        world.pay_from_outside(second.bolt11)
        resumed = next_settlement(backend, cursor)
        assert resumed.invoice.payment_hash == second.payment_hash
        assert resumed.invoice.state == InvoiceState.SETTLED

    def test_lookup_unknown_invoice_is_not_found(self, backend):
        with pytest.raises(NodeRejected) as raised:
            backend.lookup_invoice(payment_hash="00" * 32)
        assert raised.value.reason == "not_found"

    def test_cancelled_invoice_cannot_be_paid(self, backend, world):
        created = backend.create_invoice(
            amount_msat=5_000, memo="c", expiry_s=600, label="contract-7"
        )
        backend.cancel_invoice(payment_hash=created.payment_hash)
        # A node that cancels by deleting the invoice (Eclair's deleteinvoice) no longer knows
        # the hash afterwards: lookups say not_found instead of CANCELED.
        forgotten = getattr(backend, "cancelled_invoice_is_forgotten", False)
        if forgotten:
            with pytest.raises(NodeRejected) as raised:
                backend.lookup_invoice(payment_hash=created.payment_hash)
            assert raised.value.reason == "not_found"
        else:
            assert (
                backend.lookup_invoice(payment_hash=created.payment_hash).state
                == InvoiceState.CANCELED
            )
        with pytest.raises(Exception):  # noqa: B017 - the outside payer's failure, any kind
            world.pay_from_outside(created.bolt11)
        if forgotten:
            with pytest.raises(NodeRejected):
                backend.lookup_invoice(payment_hash=created.payment_hash)
        else:
            status = backend.lookup_invoice(payment_hash=created.payment_hash)
            assert status.amount_received_msat == 0

    # --- paying --------------------------------------------------------------------------
    def test_pay_invoice_succeeds_with_fee_within_limit(self, backend, world):
        bolt11 = world.outside_invoice(amount_msat=100_000, memo="coffee")
        decoded = backend.decode_invoice(bolt11=bolt11)
        result = backend.pay_invoice(bolt11=bolt11, max_fee_msat=5_000, timeout_s=10)
        assert result.status == PaymentStatus.SUCCEEDED
        assert result.payment_hash == decoded.payment_hash
        assert 0 <= result.fee_msat <= 5_000
        assert result.fee_msat == world.routing_fee_msat(100_000)
        assert preimage_matches(result.preimage, decoded.payment_hash)
        looked_up = backend.lookup_payment(payment_hash=decoded.payment_hash)
        assert looked_up.status == PaymentStatus.SUCCEEDED
        assert looked_up.fee_msat == result.fee_msat

    def test_pay_amountless_invoice_with_amount(self, backend, world):
        bolt11 = world.outside_invoice(amount_msat=None)
        result = backend.pay_invoice(
            bolt11=bolt11, amount_msat=42_000, max_fee_msat=5_000, timeout_s=10
        )
        assert result.status == PaymentStatus.SUCCEEDED
        assert result.amount_msat == 42_000

    def test_pay_failure_reports_reason(self, backend, world):
        bolt11 = world.outside_invoice(amount_msat=10_000)
        world.fail_next_payment("no_route")
        result = backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=10)
        assert result.status == PaymentStatus.FAILED
        assert result.failure_reason
        decoded = backend.decode_invoice(bolt11=bolt11)
        assert (
            backend.lookup_payment(payment_hash=decoded.payment_hash).status == PaymentStatus.FAILED
        )

    def test_hung_payment_stays_pending_then_resolves(self, backend, world):
        bolt11 = world.outside_invoice(amount_msat=10_000)
        payment_hash = backend.decode_invoice(bolt11=bolt11).payment_hash
        world.hang_next_payment()
        result = backend.pay_invoice(bolt11=bolt11, max_fee_msat=1_000, timeout_s=0.5)
        assert result.status == PaymentStatus.PENDING
        assert backend.lookup_payment(payment_hash=payment_hash).status == PaymentStatus.PENDING
        world.resolve_hung_payments(succeed=True)
        final = backend.lookup_payment(payment_hash=payment_hash)
        assert final.status == PaymentStatus.SUCCEEDED
        assert preimage_matches(final.preimage, payment_hash)

    def test_lookup_unknown_payment(self, backend):
        assert backend.lookup_payment(payment_hash="11" * 32).status == PaymentStatus.NOT_FOUND

    # --- on chain ------------------------------------------------------------------------
    def test_onchain_send_many_lookup_and_confirmations(self, backend, world):
        first, second = backend.new_address(), backend.new_address()
        assert first != second
        estimate = backend.estimate_fee(outputs=[(first, 10_000), (second, 20_000)], target_conf=6)
        assert estimate.fee_sat > 0 and estimate.sat_per_vbyte > 0
        sent = backend.send_many(
            outputs=[(first, 10_000), (second, 20_000)], target_conf=6, label="batch-1"
        )
        assert len(sent.txid) == 64
        by_label = backend.lookup_transaction(label="batch-1")
        assert by_label is not None and by_label.txid == sent.txid
        assert by_label.fee_sat is not None and by_label.fee_sat > 0
        world.mine(3)
        assert backend.lookup_transaction(txid=sent.txid).confirmations >= 3
        assert backend.lookup_transaction(label="no-such-label") is None

    def test_incoming_onchain_payment_listed(self, backend, world):
        address = backend.new_address()
        txid = world.receive_onchain(address=address, amount_sat=50_000)
        world.mine(1)
        listed = {tx.txid: tx for tx in backend.list_transactions()}
        assert txid in listed
        assert any(o.address == address and o.amount_sat == 50_000 for o in listed[txid].outputs)

    # --- failures ------------------------------------------------------------------------
    def test_unreachable_node_then_recovery(self, backend, world, secrets):
        world.stop()
        try:
            started = time.monotonic()
            with pytest.raises(NodeUnreachable) as raised:
                backend.get_info()
            assert time.monotonic() - started < backend.timeout_s + 5
            for secret in secrets:
                assert secret not in str(raised.value)
        finally:
            world.start()
        assert backend.get_info().network == self.network

    def test_wrong_credentials(self, bad_auth_backend, secrets):
        if bad_auth_backend is None:
            pytest.skip("this backend kind has no credentials")
        with pytest.raises(NodeAuthFailed) as raised:
            bad_auth_backend.get_info()
        for secret in secrets:
            assert secret not in str(raised.value)

    def test_errors_never_contain_secrets(self, backend, secrets):
        with pytest.raises(LightningError) as raised:
            backend.lookup_invoice(payment_hash="ff" * 32)
        for secret in secrets:
            assert secret not in str(raised.value)
