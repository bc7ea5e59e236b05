"""The simulated node (`type=fake`): the whole backend interface on database state
(`lightning.fakenode`), so the web, worker and listener processes all see one node.

Connection string: `type=fake` with optional
- `alias=`;
- `fee_base_msat=`, `fee_ppm=`: the routing fee the network charges this node for a payment,
  base + ppm of the amount, rounded down; default 500 msat + 1000 ppm (510 msat for 10 sat);
- `local_msat=`, `remote_msat=`: starting outbound/inbound liquidity, default 10 BTC each;
- `onchain_sat=`: starting on-chain funds, default 1 BTC.
The node is created with a new identity key on first use of its name; alias and fees given
here are applied to an existing node too, liquidity and funds only at creation.

It signs real BOLT 11 invoices and simulates the world around it (see
lightning/fakenode/services.py and the `fakenode` management command): outside payers and
payees, other fake nodes in the same database (payments between them are routed), routing
failures, hung payments, blocks and confirmations, and the node being down (`fakenode down`:
every call raises NodeUnreachable).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import NoReturn

from django.db import DatabaseError

from lightning.backends.base import (
    Balances,
    CreatedInvoice,
    DecodedInvoice,
    FeeEstimate,
    InvoiceSettlement,
    InvoiceState,
    InvoiceStatus,
    LightningBackend,
    Network,
    NodeInfo,
    NodeRejected,
    NodeUnreachable,
    OnchainOutput,
    OnchainTransaction,
    PaymentResult,
    PaymentStatus,
)
from lightning.connection import InvalidConnectionString
from lightning.errors import FlowError
from lightning.fakenode import chain, selectors, services
from lightning.fakenode.errors import FakeNodeDown, FakeNodeError
from lightning.fakenode.models import (
    FakeInvoice,
    FakeNode,
    FakePayment,
    FakePaymentStatus,
    FakeTransaction,
)
from lightning.invoices import decode_bolt11

VERSION = "satledger-fakenode 1.0"
STREAM_POLL_S = 0.25
STREAM_BATCH = 100
INT_PARAMS = ("fee_base_msat", "fee_ppm", "local_msat", "remote_msat", "onchain_sat")
KNOWN_PARAMS = frozenset({"type", "alias", *INT_PARAMS})


class FakeBackend(LightningBackend):
    kind = "fake"

    def __init__(
        self,
        *,
        node_name: str,
        network: Network,
        timeout_s: float,
        settings: services.NodeSettings | None = None,
    ) -> None:
        super().__init__(node_name=node_name, network=Network(network), timeout_s=timeout_s)
        self.settings = settings or services.NodeSettings()
        self._ensured = False

    @classmethod
    def from_connection(
        cls, params: Mapping[str, str], *, node_name: str, network: Network, timeout_s: float
    ) -> FakeBackend:
        unknown = set(params) - KNOWN_PARAMS
        if unknown:
            raise InvalidConnectionString(
                f"unknown parameter(s) for type=fake: {', '.join(sorted(unknown))}"
            )
        numbers: dict[str, int] = {}
        for key in INT_PARAMS:
            if key in params:
                try:
                    numbers[key] = int(params[key])
                except ValueError:
                    raise InvalidConnectionString(f"{key} must be an integer") from None
                if numbers[key] < 0:
                    raise InvalidConnectionString(f"{key} must not be negative")
        settings = services.NodeSettings(alias=params.get("alias") or None, **numbers)
        return cls(node_name=node_name, network=network, timeout_s=timeout_s, settings=settings)

    # --- plumbing ----------------------------------------------------------------------

    def _node(self) -> FakeNode:
        """The node's row, created on first use; NodeUnreachable when it is 'down'."""
        try:
            if not self._ensured:
                node = services.node_ensure(name=self.node_name, settings=self.settings)
                self._ensured = True
            else:
                node = FakeNode.objects.get(name=self.node_name)
        except FakeNode.DoesNotExist:  # deleted under us: create it again
            self._ensured = False
            return self._node()
        except DatabaseError as error:
            raise self._database_unavailable() from error
        if node.down:
            raise NodeUnreachable(f"simulated node {self.node_name} is down (fakenode up)")
        return node

    def _database_unavailable(self) -> NodeUnreachable:
        return NodeUnreachable(f"simulated node {self.node_name}: its database is unavailable")

    def _raise(self, error: FakeNodeError) -> NoReturn:
        if isinstance(error, FakeNodeDown):
            raise NodeUnreachable(error.message) from None
        raise NodeRejected(error.message, reason=error.reason) from None

    # --- info --------------------------------------------------------------------------

    def get_info(self) -> NodeInfo:
        node = self._node()
        return NodeInfo(
            alias=node.alias,
            pubkey=node.pubkey,
            network=self.network,
            block_height=selectors.world_height(),
            synced_to_chain=True,
            version=VERSION,
        )

    def get_balances(self) -> Balances:
        node = self._node()
        onchain = selectors.onchain_balance(node=node)
        return Balances(
            channel_local_msat=node.local_msat,
            channel_remote_msat=node.remote_msat,
            onchain_confirmed_sat=onchain.confirmed_sat,
            onchain_unconfirmed_sat=onchain.unconfirmed_sat,
        )

    # --- receiving ---------------------------------------------------------------------

    def create_invoice(
        self,
        *,
        amount_msat: int | None,
        memo: str,
        expiry_s: int,
        label: str,
        description_hash: bytes | None = None,
    ) -> CreatedInvoice:
        for attempt in range(2):
            if not self._ensured:
                self._node()  # creates the node on first use; invoice_create checks it is up
            try:
                invoice = services.invoice_create(
                    node_name=self.node_name,
                    network=self.network,
                    amount_msat=amount_msat,
                    memo=memo,
                    expiry_s=expiry_s,
                    label=label,
                    description_hash=description_hash,
                )
                break
            except FakeNodeError as error:
                if error.reason == "not_found" and attempt == 0:
                    self._ensured = False  # the node was deleted under us: create it again
                    continue
                self._raise(error)
            except DatabaseError as error:
                raise self._database_unavailable() from error
        return CreatedInvoice(
            payment_hash=invoice.payment_hash,
            bolt11=invoice.bolt11,
            amount_msat=invoice.amount_msat,
            expires_at=invoice.expires_at,
        )

    def _status(self, invoice: FakeInvoice) -> InvoiceStatus:
        state = selectors.invoice_state(invoice)
        return InvoiceStatus(
            payment_hash=invoice.payment_hash,
            state=InvoiceState(state),
            amount_msat=invoice.amount_msat,
            amount_received_msat=invoice.amount_received_msat,
            preimage=invoice.preimage if state == InvoiceState.SETTLED else None,
            settled_at=invoice.settled_at,
            label=invoice.label,
        )

    def lookup_invoice(self, *, payment_hash: str) -> InvoiceStatus:
        node = self._node()
        invoice = selectors.invoice_of_node(node=node, payment_hash=payment_hash.lower())
        if invoice is None:
            raise NodeRejected("no invoice with this payment hash", reason="not_found")
        return self._status(invoice)

    def cancel_invoice(self, *, payment_hash: str) -> None:
        # No separate read of the node row: invoice_cancel checks that it exists and is up.
        try:
            services.invoice_cancel(node_name=self.node_name, payment_hash=payment_hash.lower())
        except FakeNodeError as error:
            self._raise(error)
        except DatabaseError as error:
            raise self._database_unavailable() from error

    def stream_settled_invoices(self, *, cursor: str | None) -> Iterator[InvoiceSettlement]:
        """Polls the database every STREAM_POLL_S for invoices with settle_index > cursor.
        Indexes commit in order (services.py), so nothing is ever skipped."""
        try:
            after = int(cursor) if cursor else 0
        except ValueError:
            raise NodeRejected(
                f"invalid stream cursor {cursor!r}", reason="invalid_cursor"
            ) from None
        while True:
            node = self._node()  # raises NodeUnreachable when the node goes down
            batch = selectors.settled_invoices_after(
                node=node, settle_index=after, limit=STREAM_BATCH
            )
            for invoice in batch:
                after = invoice.settle_index
                yield InvoiceSettlement(invoice=self._status(invoice), cursor=str(after))
            if not batch:
                time.sleep(STREAM_POLL_S)

    # --- paying ------------------------------------------------------------------------

    def decode_invoice(self, *, bolt11: str) -> DecodedInvoice:
        self._node()
        try:
            return decode_bolt11(bolt11, network=self.network)
        except FlowError as error:
            raise NodeRejected(error.message, reason=error.code) from None

    def pay_invoice(
        self,
        *,
        bolt11: str,
        max_fee_msat: int,
        timeout_s: float,
        amount_msat: int | None = None,
    ) -> PaymentResult:
        self._node()
        try:
            payment = services.payment_send(
                node_name=self.node_name,
                network=self.network,
                bolt11=bolt11,
                max_fee_msat=max_fee_msat,
                amount_msat=amount_msat,
                timeout_s=timeout_s,
            )
        except FakeNodeError as error:
            self._raise(error)
        return _payment_result(payment)

    def lookup_payment(self, *, payment_hash: str) -> PaymentResult:
        node = self._node()
        payment = selectors.payment_of_node(node=node, payment_hash=payment_hash.lower())
        if payment is None:
            return PaymentResult(payment_hash=payment_hash, status=PaymentStatus.NOT_FOUND)
        return _payment_result(payment)

    # --- on chain ----------------------------------------------------------------------

    def new_address(self) -> str:
        self._node()
        try:
            return services.address_new(node_name=self.node_name, network=self.network)
        except FakeNodeError as error:
            self._raise(error)

    def estimate_fee(self, *, outputs: Sequence[tuple[str, int]], target_conf: int) -> FeeEstimate:
        self._node()
        for address, _amount in outputs:
            try:
                chain.normalize_address(address, network=self.network)
            except chain.InvalidAddress as error:
                raise NodeRejected(f"{address}: {error}", reason="invalid_address") from None
        fee_sat, rate = selectors.fee_estimate_sat(
            output_count=len(outputs), target_conf=target_conf
        )
        return FeeEstimate(fee_sat=fee_sat, sat_per_vbyte=rate)

    def send_many(
        self, *, outputs: Sequence[tuple[str, int]], target_conf: int, label: str
    ) -> OnchainTransaction:
        node = self._node()
        try:
            tx = services.onchain_send_many(
                node_name=self.node_name,
                network=self.network,
                outputs=outputs,
                target_conf=target_conf,
                label=label,
            )
        except FakeNodeError as error:
            self._raise(error)
        return self._transaction(tx, node=node)

    def lookup_transaction(
        self, *, txid: str | None = None, label: str | None = None
    ) -> OnchainTransaction | None:
        node = self._node()
        if txid is None and label is None:
            raise NodeRejected("give a txid or a label", reason="invalid_request")
        candidates = selectors.node_transactions(node=node)
        if txid is not None:
            candidates = [tx for tx in candidates if tx.txid == txid.lower()]
        if label is not None:
            candidates = [tx for tx in candidates if tx.node_id == node.pk and tx.label == label]
        return self._transaction(candidates[-1], node=node) if candidates else None

    def list_transactions(self, *, min_confirmations: int = 0) -> list[OnchainTransaction]:
        node = self._node()
        height = selectors.world_height()
        ours = selectors.node_addresses(node=node)
        listed = [
            self._transaction(tx, node=node, height=height, ours=ours)
            for tx in selectors.node_transactions(node=node)
        ]
        return [tx for tx in listed if tx.confirmations >= min_confirmations]

    def _transaction(
        self,
        tx: FakeTransaction,
        *,
        node: FakeNode,
        height: int | None = None,
        ours: set[str] | None = None,
    ) -> OnchainTransaction:
        height = selectors.world_height() if height is None else height
        ours = selectors.node_addresses(node=node) if ours is None else ours
        return OnchainTransaction(
            txid=tx.txid,
            confirmations=selectors.confirmations(tx, height=height),
            fee_sat=tx.fee_sat if tx.node_id == node.pk else None,
            label=tx.label if tx.node_id == node.pk else "",
            outputs=tuple(
                OnchainOutput(address=o.address, amount_sat=o.amount_sat, ours=o.address in ours)
                for o in tx.outputs.all()
            ),
            block_height=tx.block_height,
        )


def _payment_result(payment: FakePayment) -> PaymentResult:
    status = PaymentStatus(payment.status)
    return PaymentResult(
        payment_hash=payment.payment_hash,
        status=status,
        amount_msat=payment.amount_msat,
        fee_msat=payment.fee_msat if status != FakePaymentStatus.FAILED else None,
        preimage=payment.preimage or None,
        failure_reason=payment.failure_reason,
    )
