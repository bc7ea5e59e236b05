"""Invoice listeners: one per node, following the node's settled-invoice stream from the
cursor stored in the database and handing each settlement to `invoice_settle_from_node`.

Exactly-once does not depend on there being one listener: the credit and the cursor are
written in one transaction, and the ledger journal key `deposit:<payment_hash>` is unique, so
two listener processes (or a listener and the polling job) can never credit twice. A crash
between the credit and the cursor write just replays a settlement, which is a no-op."""

from __future__ import annotations

import logging
import threading
import time

from django.db import close_old_connections, transaction

from lightning.backends.base import InvoiceSettlement, LightningError
from lightning.models import InvoiceStreamCursor, Node
from lightning.nodes import forget_backends, mark_unreachable, node_backend
from lightning.services import SettlementRejected, invoice_settle_from_node

logger = logging.getLogger(__name__)

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0


def cursor_load(*, node: Node) -> str | None:
    cursor = InvoiceStreamCursor.objects.filter(node=node).values_list("cursor", flat=True).first()
    return cursor or None


def _later(new: str, old: str) -> bool:
    if new.isdigit() and old.isdigit():
        return int(new) > int(old)
    return new != old


def settlement_handle(*, node: Node, settlement: InvoiceSettlement) -> None:
    """Credit one settlement and move the node's cursor past it, atomically."""
    with transaction.atomic():
        try:
            invoice_settle_from_node(node=node, status=settlement.invoice)
        except SettlementRejected as error:
            # Never credit it; move on so one bad report does not stall the node.
            logger.error("node %s: settlement refused: %s", node.name, error)
        stored, _ = InvoiceStreamCursor.objects.select_for_update().get_or_create(node=node)
        if not stored.cursor or _later(settlement.cursor, stored.cursor):
            stored.cursor = settlement.cursor
            stored.save(update_fields=["cursor", "updated_at"])


def listen_to_node(*, node_id: int, stop: threading.Event) -> None:
    """Follow one node until `stop` is set, reconnecting with exponential backoff."""
    delay = BACKOFF_START_S
    while not stop.is_set():
        close_old_connections()
        node = Node.objects.filter(pk=node_id, enabled=True).first()
        if node is None:
            stop.wait(BACKOFF_MAX_S)
            continue
        try:
            backend = node_backend(node)
            cursor = cursor_load(node=node)
            logger.info("listener %s: following settled invoices from cursor %s", node.name, cursor)
            for settlement in backend.stream_settled_invoices(cursor=cursor):
                settlement_handle(node=node, settlement=settlement)
                delay = BACKOFF_START_S
                if stop.is_set():
                    return
        except LightningError as error:
            logger.warning(
                "listener %s: %s; reconnecting in %.0fs", node.name, error.message, delay
            )
            mark_unreachable(node, error)
            forget_backends()
        except Exception:
            logger.exception(
                "listener %s: unexpected error; reconnecting in %.0fs", node.name, delay
            )
            forget_backends()
        stop.wait(delay)
        delay = min(delay * 2, BACKOFF_MAX_S)


def run_listeners(
    *, stop: threading.Event, node_names: list[str] | None = None, rescan_s: float = 15.0
) -> None:
    """Start a listener thread per enabled node (and for nodes added later) until `stop`."""
    threads: dict[int, threading.Thread] = {}
    while not stop.is_set():
        nodes = Node.objects.filter(enabled=True)
        if node_names:
            nodes = nodes.filter(name__in=node_names)
        for node in nodes:
            thread = threads.get(node.pk)
            if thread is None or not thread.is_alive():
                thread = threading.Thread(
                    target=listen_to_node,
                    kwargs={"node_id": node.pk, "stop": stop},
                    name=f"listener-{node.name}",
                    daemon=True,
                )
                thread.start()
                threads[node.pk] = thread
        close_old_connections()
        stop.wait(rescan_s)
    deadline = time.monotonic() + 5
    for thread in threads.values():
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
