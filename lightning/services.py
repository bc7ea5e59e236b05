"""Writes of the lightning app. The rule: never hold a database transaction across a call to a
node. Each function that talks to a node does so between short transactions."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.sqlrows import ModelSql
from ledger import services as ledger
from lightning.backends import base
from lightning.errors import InvalidAmount
from lightning.invoices import preimage_proves
from lightning.models import Invoice, InvoiceStatus, Node
from lightning.nodes import NoNodeAvailable, mark_unreachable, node_backend, receiving_nodes

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger(__name__)

# An invoice is only marked expired once the node confirms it was not paid and this long
# after its expiry (clock skew between us and the node).
EXPIRY_GRACE = timedelta(seconds=60)


class SettlementRejected(Exception):
    """The node reported a settlement we must not credit (bad preimage, no amount)."""


def deposit_journal_key(payment_hash: str) -> str:
    return f"deposit:{payment_hash}"


def invoice_settle_from_node(*, node: Node, status: base.InvoiceStatus) -> Invoice | None:
    """Credit a settled deposit invoice exactly once: the amount the node says arrived, after
    checking sha256(preimage) == payment_hash when the backend gives a preimage.

    Safe to call any number of times and from several listeners at once: the invoice row is
    locked, and the ledger journal's key `deposit:<payment_hash>` is unique in the database.
    Returns None when the hash is not one of our deposit invoices on this node."""
    if status.state != base.InvoiceState.SETTLED:
        return None
    if status.amount_received_msat <= 0:
        raise SettlementRejected(f"settlement of {status.payment_hash} reports no amount")
    if status.preimage and not preimage_proves(
        preimage=status.preimage, payment_hash=status.payment_hash
    ):
        raise SettlementRejected(f"preimage does not match payment hash {status.payment_hash}")

    with transaction.atomic():
        invoice = (
            Invoice.objects.select_for_update()
            .select_related("user", "node")
            .filter(payment_hash=status.payment_hash, node=node)
            .first()
        )
        if invoice is None:
            return None
        if invoice.status == InvoiceStatus.SETTLED and not invoice.settled_internally:
            return invoice
        if invoice.settled_internally:
            # Cancelled on the node before the internal payment, yet the node says money
            # arrived: it is real money, so credit it, and tell the operator.
            logger.error(
                "invoice %s settled internally was also paid on node %s", invoice.pk, node.name
            )
        journal = ledger.transfer(
            idempotency_key=deposit_journal_key(invoice.payment_hash),
            kind="deposit",
            debit=ledger.node_asset_account_get_or_create(node_name=node.name),
            credit=ledger.user_account_get_or_create(user=invoice.user),
            amount_msat=status.amount_received_msat,
            memo=f"Lightning deposit {invoice.payment_hash[:16]}",
            reference=("lightning.invoice", str(invoice.pk)),
        )
        if invoice.settled_internally:
            return invoice
        invoice.status = InvoiceStatus.SETTLED
        invoice.amount_received_msat = status.amount_received_msat
        invoice.preimage = status.preimage or ""
        invoice.settled_at = status.settled_at or timezone.now()
        invoice.journal = journal
        invoice.save(
            update_fields=["status", "amount_received_msat", "preimage", "settled_at", "journal"]
        )
        return invoice


def invoice_refresh(*, invoice: Invoice) -> Invoice:
    """Ask the node about one open invoice (no transaction held during the call): credit it if
    settled, mark it expired if the node can no longer be paid and it is past expiry."""
    status = node_backend(invoice.node).lookup_invoice(payment_hash=invoice.payment_hash)
    if status.state == base.InvoiceState.SETTLED:
        return invoice_settle_from_node(node=invoice.node, status=status) or invoice
    now = timezone.now()
    if status.state == base.InvoiceState.CANCELED or now > invoice.expires_at + EXPIRY_GRACE:
        Invoice.objects.filter(pk=invoice.pk, status=InvoiceStatus.OPEN).update(
            status=InvoiceStatus.EXPIRED
        )
        invoice.refresh_from_db()
    return invoice


def invoices_poll_open(*, limit: int = 500) -> dict[str, int]:
    """Safety net behind the listeners: refresh open invoices, oldest first. A node that does
    not answer is skipped this round (its invoices stay open)."""
    counts = {"checked": 0, "settled": 0, "expired": 0, "unreachable": 0}
    unreachable_nodes: set[int] = set()
    open_invoices = Invoice.objects.filter(status=InvoiceStatus.OPEN).select_related("node", "user")
    for invoice in open_invoices.order_by("created_at")[:limit]:
        if invoice.node_id in unreachable_nodes:
            continue
        try:
            refreshed = invoice_refresh(invoice=invoice)
        except base.NodeUnreachable:
            unreachable_nodes.add(invoice.node_id)
            counts["unreachable"] += 1
            continue
        except (base.LightningError, SettlementRejected) as error:
            logger.warning("poll of invoice %s failed: %s", invoice.pk, error)
            continue
        counts["checked"] += 1
        if refreshed.status == InvoiceStatus.SETTLED:
            counts["settled"] += 1
        elif refreshed.status == InvoiceStatus.EXPIRED:
            counts["expired"] += 1
    return counts


# --- deposits ----------------------------------------------------------------------------


_INVOICE_ROWS = ModelSql(Invoice, "i")  # inserted without the ORM's per-query cost


def deposit_create(
    *,
    user: User,
    amount_msat: int | None,
    memo: str = "",
    description_hash: bytes | None = None,
) -> Invoice:
    """Create a deposit invoice on a receive node (failing over past nodes that are down) and
    record payment_hash -> user. The user's UUID is in the memo and in our unique label; the
    credit is matched by payment_hash only. The bolt11 reaches the user only after the row
    is committed, so nobody can pay an invoice we have not recorded."""
    if amount_msat is not None and not 0 < amount_msat <= settings.DEPOSIT_MAX_MSAT:
        raise InvalidAmount(
            f"a deposit must be between 1 and {settings.DEPOSIT_MAX_MSAT} msat",
            max_msat=settings.DEPOSIT_MAX_MSAT,
        )
    text = memo.strip()[:500] or "Deposit"
    node_memo = f"{text} ({user.uuid})"
    label = f"satledger:{user.uuid}:{secrets.token_hex(8)}"
    for node in receiving_nodes(amount_msat=amount_msat):
        try:
            created = node_backend(node).create_invoice(
                amount_msat=amount_msat,
                memo="" if description_hash else node_memo,
                expiry_s=settings.DEPOSIT_INVOICE_EXPIRY_S,
                label=label,
                description_hash=description_hash,
            )
        except (base.NodeUnreachable, base.NodeAuthFailed, base.OutcomeUnknown) as error:
            logger.warning("deposit: node %s unavailable (%s), trying next", node.name, error.code)
            mark_unreachable(node, error)
            continue
        except base.NodeRejected as error:
            logger.warning("deposit: node %s refused the invoice (%s)", node.name, error.reason)
            continue
        return _INVOICE_ROWS.insert(
            Invoice(
                payment_hash=created.payment_hash,
                node=node,
                user=user,
                bolt11=created.bolt11,
                label=label,
                memo=memo.strip()[:640],
                amount_msat=created.amount_msat,
                expires_at=created.expires_at,  # the node's own expiry, exactly
            )
        )
    raise NoNodeAvailable("no Lightning node can create a deposit invoice right now")
