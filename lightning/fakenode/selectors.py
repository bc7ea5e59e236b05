"""Reads of the simulated node's state (no writes, no locks)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, Sum
from django.utils import timezone

from lightning.fakenode import chain
from lightning.fakenode.models import (
    FakeAddress,
    FakeInvoice,
    FakeInvoiceState,
    FakeNode,
    FakePayment,
    FakeTransaction,
    FakeTxOutput,
    FakeWorld,
)


def node_find(*, name: str) -> FakeNode | None:
    return FakeNode.objects.filter(name=name).first()


def world_height() -> int:
    height = FakeWorld.objects.filter(pk=1).values_list("block_height", flat=True).first()
    return height if height is not None else FakeWorld._meta.get_field("block_height").default


def invoice_state(invoice: FakeInvoice, *, now: datetime | None = None) -> FakeInvoiceState:
    """An open invoice past its expiry reads as canceled (it can no longer be paid)."""
    if invoice.state == FakeInvoiceState.OPEN and invoice.expires_at <= (now or timezone.now()):
        return FakeInvoiceState.CANCELED
    return FakeInvoiceState(invoice.state)


def invoice_of_node(*, node: FakeNode, payment_hash: str) -> FakeInvoice | None:
    return FakeInvoice.objects.filter(node=node, payment_hash=payment_hash).first()


def settled_invoices_after(*, node: FakeNode, settle_index: int, limit: int) -> list[FakeInvoice]:
    return list(
        FakeInvoice.objects.filter(node=node, settle_index__gt=settle_index).order_by(
            "settle_index"
        )[:limit]
    )


def payment_of_node(*, node: FakeNode, payment_hash: str) -> FakePayment | None:
    return FakePayment.objects.filter(node=node, payment_hash=payment_hash).first()


# --- on chain ----------------------------------------------------------------------------


def confirmations(transaction: FakeTransaction, *, height: int) -> int:
    if transaction.block_height is None:
        return 0
    return max(0, height - transaction.block_height + 1)


def node_addresses(*, node: FakeNode) -> set[str]:
    return set(FakeAddress.objects.filter(node=node).values_list("address", flat=True))


def node_transactions(*, node: FakeNode) -> list[FakeTransaction]:
    """Transactions the node's wallet sent or received, oldest first, outputs prefetched."""
    ours = FakeAddress.objects.filter(node=node).values("address")
    received = FakeTxOutput.objects.filter(address__in=ours)
    return list(
        FakeTransaction.objects.filter(Q(node=node) | Q(pk__in=received.values("transaction_id")))
        .prefetch_related("outputs")
        .order_by("created_at", "pk")
    )


@dataclass(frozen=True, slots=True)
class OnchainBalance:
    confirmed_sat: int
    unconfirmed_sat: int


def onchain_balance(*, node: FakeNode) -> OnchainBalance:
    """Initial funds + received - everything the node's own sends spent (outputs and fee,
    counted when sent). Received coins count as confirmed once mined; change is not modelled
    (a send spends exactly its outputs and fee)."""
    ours = FakeAddress.objects.filter(node=node).values("address")
    received = FakeTxOutput.objects.filter(address__in=ours)
    confirmed_in = received.filter(transaction__block_height__isnull=False).aggregate(
        total=Sum("amount_sat", default=0)
    )["total"]
    unconfirmed_in = received.filter(transaction__block_height__isnull=True).aggregate(
        total=Sum("amount_sat", default=0)
    )["total"]
    sent_outputs = FakeTxOutput.objects.filter(transaction__node=node).aggregate(
        total=Sum("amount_sat", default=0)
    )["total"]
    sent_fees = FakeTransaction.objects.filter(node=node).aggregate(
        total=Sum("fee_sat", default=0)
    )["total"]
    return OnchainBalance(
        confirmed_sat=node.onchain_initial_sat + confirmed_in - sent_outputs - sent_fees,
        unconfirmed_sat=unconfirmed_in,
    )


def fee_estimate_sat(*, output_count: int, target_conf: int) -> tuple[int, int]:
    """(fee_sat, sat_per_vbyte) for a transaction with `output_count` outputs."""
    rate = chain.sat_per_vbyte(target_conf)
    return chain.estimate_vbytes(output_count) * rate, rate
