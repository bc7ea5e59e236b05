"""Writes of the simulated node and its outside world. Each function is one short transaction.

Locking (the same on PostgreSQL and SQLite; on SQLite every write transaction takes the
database lock at BEGIN, `transaction_mode=IMMEDIATE`, so writers are serialised anyway):

- A fake node's row is its lock. Whatever settles an invoice, sends or resolves a payment,
  spends on chain, or changes a toggle locks the node row(s) first, with `SELECT ... FOR
  UPDATE`, several nodes always in ascending id order (a payment from A to B and one from B to
  A cannot deadlock), then the invoice/payment rows.
- settle_index: the next number is `last_settle_index + 1` of the locked node row, written in
  the same transaction as the invoice it numbers. Rolling back gives the number back (no
  gaps), two settlers cannot take the same number (the row lock, plus a unique constraint),
  and index N+1 cannot commit before N (the second settler waits for the first's commit to
  read the counter), so a listener reading `settle_index > cursor` never skips one. A
  database sequence would give none of the last two guarantees.

Payments (see `payment_send`): an invoice issued by another fake node in the same database is
routed to it (its invoice settled, its preimage returned); an invoice of the outside world
(`outside_invoice_create`) is paid with the preimage the world kept; any other invoice fails
with "no_route": nobody here knows its preimage, as a real node finds no route to an unknown
payee.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from coincurve import PrivateKey
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from config.sqlrows import ModelSql
from lightning.backends.base import DecodedInvoice, Network
from lightning.errors import FlowError
from lightning.fakenode import chain, selectors
from lightning.fakenode.errors import FakeNodeDown, FakeNodeError
from lightning.fakenode.models import (
    DEFAULT_FEE_BASE_MSAT,
    DEFAULT_FEE_PPM,
    DEFAULT_LOCAL_MSAT,
    DEFAULT_ONCHAIN_SAT,
    DEFAULT_REMOTE_MSAT,
    FakeAddress,
    FakeInvoice,
    FakeInvoiceState,
    FakeNode,
    FakePayment,
    FakePaymentStatus,
    FakeTransaction,
    FakeTxOutput,
    FakeWorld,
    OutsideInvoice,
)
from lightning.invoices import MAX_DESCRIPTION_BYTES, decode_bolt11, pubkey_of, sign_bolt11

HUNG_FAILURE_REASON = "timeout"
OUTSIDE_INVOICE_EXPIRY_S = 3600


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """How a fake node starts (from its connection string). `alias`, `fee_base_msat` and
    `fee_ppm` given explicitly are also applied to an existing node; liquidity and on-chain
    funds only at creation."""

    alias: str | None = None
    fee_base_msat: int | None = None
    fee_ppm: int | None = None
    local_msat: int | None = None
    remote_msat: int | None = None
    onchain_sat: int | None = None


def _new_secret() -> str:
    return secrets.token_bytes(32).hex()


def _new_private_key() -> str:
    return PrivateKey().secret.hex()


def _decode(bolt11: str, *, network: Network) -> DecodedInvoice:
    try:
        return decode_bolt11(bolt11, network=network)
    except FlowError as error:
        raise FakeNodeError(error.message, reason=error.code) from None


# --- the world and the nodes --------------------------------------------------------------


def world_ensure() -> FakeWorld:
    world = FakeWorld.objects.filter(pk=1).first()
    if world is not None:
        return world
    key = _new_private_key()
    try:
        with transaction.atomic():
            return FakeWorld.objects.create(
                pk=1, private_key=key, pubkey=pubkey_of(bytes.fromhex(key))
            )
    except IntegrityError:  # created concurrently
        return FakeWorld.objects.get(pk=1)


def node_ensure(*, name: str, settings: NodeSettings | None = None) -> FakeNode:
    """The fake node called `name`, created (with a new identity key) on first use."""
    config = settings or NodeSettings()
    node = FakeNode.objects.filter(name=name).first()
    if node is None:
        key = _new_private_key()
        try:
            with transaction.atomic():
                node = FakeNode.objects.create(
                    name=name,
                    alias=config.alias or name,
                    private_key=key,
                    pubkey=pubkey_of(bytes.fromhex(key)),
                    fee_base_msat=_default(config.fee_base_msat, DEFAULT_FEE_BASE_MSAT),
                    fee_ppm=_default(config.fee_ppm, DEFAULT_FEE_PPM),
                    local_msat=_default(config.local_msat, DEFAULT_LOCAL_MSAT),
                    remote_msat=_default(config.remote_msat, DEFAULT_REMOTE_MSAT),
                    onchain_initial_sat=_default(config.onchain_sat, DEFAULT_ONCHAIN_SAT),
                )
        except IntegrityError:  # created concurrently by another process
            node = FakeNode.objects.get(name=name)
        return node
    changes = {
        field: value
        for field, value in (
            ("alias", config.alias),
            ("fee_base_msat", config.fee_base_msat),
            ("fee_ppm", config.fee_ppm),
        )
        if value is not None and getattr(node, field) != value
    }
    if changes:
        FakeNode.objects.filter(pk=node.pk).update(**changes)
        node.refresh_from_db()
    return node


def _default(value: int | None, default: int) -> int:
    return default if value is None else value


def _lock_nodes(*ids: int) -> dict[int, FakeNode]:
    """Lock node rows in ascending id order (inside a transaction)."""
    locked = FakeNode.objects.select_for_update().filter(pk__in=set(ids)).order_by("pk")
    return {node.pk: node for node in locked}


def _lock_node(name: str) -> FakeNode:
    node = FakeNode.objects.select_for_update().filter(name=name).first()
    if node is None:
        raise FakeNodeError(f"no simulated node called {name}", reason="not_found")
    return node


def node_set_down(*, name: str, down: bool) -> FakeNode:
    """Simulate the node going away (every backend call raises NodeUnreachable) or back."""
    node_ensure(name=name)
    with transaction.atomic():
        node = _lock_node(name)
        node.down = down
        node.save(update_fields=["down"])
    return node


def node_fail_next(*, name: str, count: int = 1, reason: str = "no_route") -> FakeNode:
    """The next `count` payments this node sends fail with `reason`."""
    if count < 0 or not reason:
        raise ValueError("count must be >= 0 and reason not empty")
    node_ensure(name=name)
    with transaction.atomic():
        node = _lock_node(name)
        node.fail_next, node.fail_reason = count, reason[:100]
        node.save(update_fields=["fail_next", "fail_reason"])
    return node


def node_hang_next(*, name: str, count: int = 1) -> FakeNode:
    """The next `count` payments this node sends stay in flight until resolved."""
    if count < 0:
        raise ValueError("count must be >= 0")
    node_ensure(name=name)
    with transaction.atomic():
        node = _lock_node(name)
        node.hang_next = count
        node.save(update_fields=["hang_next"])
    return node


# --- invoices the fake nodes issue --------------------------------------------------------


# Deposits create invoices on the simulated node: its hot statements skip the ORM's build cost.
_NODE_SQL = ModelSql(FakeNode, "n")
_INVOICE_SQL = ModelSql(FakeInvoice, "i")


def _node_by_name(name: str) -> FakeNode | None:
    found = _NODE_SQL.where("n.name = %s", [name])
    return found[0] if found else None


def invoice_create(
    *,
    node_name: str,
    network: Network,
    amount_msat: int | None,
    memo: str,
    expiry_s: int,
    label: str,
    description_hash: bytes | None = None,
) -> FakeInvoice:
    if amount_msat is not None and amount_msat <= 0:
        raise FakeNodeError("the amount must be positive", reason="invalid_amount")
    if expiry_s <= 0:
        raise FakeNodeError("the expiry must be positive", reason="invalid_expiry")
    if description_hash is None and len(memo.encode()) > MAX_DESCRIPTION_BYTES:
        raise FakeNodeError("the memo is too long", reason="invalid_memo")
    if description_hash is not None and len(description_hash) != 32:
        raise FakeNodeError("a description hash is 32 bytes", reason="invalid_description_hash")
    preimage, payment_secret = _new_secret(), _new_secret()
    payment_hash = hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
    now = timezone.now().replace(microsecond=0)
    # No lock on the node row: creating an invoice changes nothing of the node's, and a lock
    # here serialized every deposit across all workers (bench/RESULTS.md, API vs LNbits).
    # Only settlement locks the node (its settle index). The label is unique by constraint.
    node = _node_by_name(node_name)
    if node is None:
        raise FakeNodeError(f"no simulated node called {node_name}", reason="not_found")
    if node.down:
        raise FakeNodeDown(node.name)
    bolt11 = sign_bolt11(
        private_key=bytes.fromhex(node.private_key),
        network=network,
        payment_hash=payment_hash,
        payment_secret=payment_secret,
        amount_msat=amount_msat,
        expiry_s=expiry_s,
        description=memo,
        description_hash=description_hash,
        created_at=now,
    )
    # Outside a transaction the INSERT is its own (no BEGIN/COMMIT round trips); inside one,
    # a savepoint keeps the caller's transaction usable after a duplicate label.
    try:
        with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
            return _INVOICE_SQL.insert(
                FakeInvoice(
                    node=node,
                    payment_hash=payment_hash,
                    preimage=preimage,
                    payment_secret=payment_secret,
                    bolt11=bolt11,
                    label=label,
                    memo=memo,
                    description_hash=description_hash.hex() if description_hash else "",
                    amount_msat=amount_msat,
                    created_at=now,
                    expires_at=now + timedelta(seconds=expiry_s),
                )
            )
    except IntegrityError as error:
        if label and FakeInvoice.objects.filter(node=node, label=label).exists():
            raise FakeNodeError(
                f"an invoice labelled {label} exists", reason="duplicate_label"
            ) from error
        raise


def _stands_alone() -> bool:
    """True when the next statement is its own transaction on PostgreSQL (autocommit, no
    caller's transaction around it)."""
    return (
        connection.vendor == "postgresql"
        and connection.get_autocommit()
        and not connection.in_atomic_block
    )


# A real node keeps its cancel in its own store; this simulator shares Satledger's database,
# so a cancel's commit would wait for its own WAL flush (an fsync) just before the internal
# payment's commit waits for another. A cancel that is its own transaction commits without
# waiting: it is visible at once, and the payment's commit, later in the WAL, flushes it too.
# A crash can lose only a cancel whose payment never committed, which leaves the invoice open
# on both sides, as if it had not been cancelled. Never inside a caller's transaction: there
# the setting would cover the caller's own commit.
_ASYNC_COMMIT = " RETURNING set_config('synchronous_commit', 'off', true)"


def invoice_cancel(*, node_name: str, payment_hash: str) -> None:
    """Locks only the invoice row (settlement locks node, then invoice: no cycle)."""
    # The common case in one statement: an open invoice of a node that is up. The UPDATE
    # re-checks its WHERE after waiting for a concurrent settlement's row lock.
    # Hand-written: the ORM's UPDATE through a join costs more CPU than the statement.
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {FakeInvoice._meta.db_table} SET state = %s"
            " WHERE payment_hash = %s AND state = %s AND node_id ="
            f" (SELECT id FROM {FakeNode._meta.db_table} WHERE name = %s AND NOT down)"
            + (_ASYNC_COMMIT if _stands_alone() else ""),
            [FakeInvoiceState.CANCELED.value, payment_hash, FakeInvoiceState.OPEN.value, node_name],
        )
        if cursor.rowcount == 1:
            return
    with transaction.atomic():
        node = FakeNode.objects.filter(name=node_name).first()
        if node is None:
            raise FakeNodeError(f"no simulated node called {node_name}", reason="not_found")
        if node.down:
            raise FakeNodeDown(node.name)
        invoice = (
            FakeInvoice.objects.select_for_update()
            .filter(node=node, payment_hash=payment_hash)
            .first()
        )
        if invoice is None:
            raise FakeNodeError("no such invoice", reason="not_found")
        if invoice.state == FakeInvoiceState.SETTLED:
            raise FakeNodeError("the invoice is already settled", reason="already_paid")
        if invoice.state != FakeInvoiceState.CANCELED:
            invoice.state = FakeInvoiceState.CANCELED
            invoice.save(update_fields=["state"])


def _amount_acceptable(asked_msat: int | None, paid_msat: int) -> bool:
    """BOLT 4: a payee accepts at least the amount asked and at most twice it."""
    return asked_msat is None or asked_msat <= paid_msat <= 2 * asked_msat


def _receive(
    *, payee: FakeNode, invoice: FakeInvoice, amount_msat: int, now: datetime
) -> str | None:
    """Settle `invoice` of the locked node `payee` for `amount_msat` arriving. Returns None on
    success, else the reason the payee refused (nothing changed then)."""
    if payee.down:
        return "no_route"
    invoice = FakeInvoice.objects.select_for_update().get(pk=invoice.pk)
    if selectors.invoice_state(invoice, now=now) != FakeInvoiceState.OPEN:
        return "incorrect_payment_details"  # settled, cancelled or expired
    if not _amount_acceptable(invoice.amount_msat, amount_msat):
        return "incorrect_payment_details"
    if payee.remote_msat < amount_msat:
        return "no_route"  # not enough inbound liquidity
    payee.last_settle_index += 1
    payee.local_msat += amount_msat
    payee.remote_msat -= amount_msat
    payee.save(update_fields=["last_settle_index", "local_msat", "remote_msat"])
    invoice.state = FakeInvoiceState.SETTLED
    invoice.settle_index = payee.last_settle_index
    invoice.amount_received_msat = amount_msat
    invoice.settled_at = now
    invoice.save(update_fields=["state", "settle_index", "amount_received_msat", "settled_at"])
    return None


def invoice_pay_from_outside(
    *,
    bolt11: str,
    network: Network,
    amount_msat: int | None = None,
    node_name: str | None = None,
) -> FakeInvoice:
    """An outside payer pays an invoice a fake node issued: it settles, with the next
    settle_index of that node. Raises FakeNodeError when the payment cannot arrive."""
    decoded = _decode(bolt11, network=network)
    invoice = (
        FakeInvoice.objects.select_related("node")
        .filter(payment_hash=decoded.payment_hash, node__pubkey=decoded.payee)
        .first()
    )
    if invoice is None or (node_name is not None and invoice.node.name != node_name):
        raise FakeNodeError(
            "this invoice was not issued by a simulated node here", reason="unknown_payee"
        )
    amount = amount_msat if amount_msat is not None else decoded.amount_msat
    if amount is None:
        raise FakeNodeError("this invoice has no amount: give one", reason="amount_required")
    if amount <= 0:
        raise FakeNodeError("the amount must be positive", reason="invalid_amount")
    with transaction.atomic():
        payee = _lock_node(invoice.node.name)
        if payee.down:
            raise FakeNodeDown(payee.name)
        refused = _receive(payee=payee, invoice=invoice, amount_msat=amount, now=timezone.now())
        if refused:
            raise FakeNodeError(f"the payee refused the payment: {refused}", reason=refused)
    invoice.refresh_from_db()
    return invoice


# --- the outside world --------------------------------------------------------------------


def outside_invoice_create(
    *,
    network: Network,
    amount_msat: int | None,
    memo: str = "",
    expiry_s: int = OUTSIDE_INVOICE_EXPIRY_S,
) -> OutsideInvoice:
    """An invoice of an outside payee that fake nodes can pay (the world keeps its preimage)."""
    if amount_msat is not None and amount_msat <= 0:
        raise FakeNodeError("the amount must be positive", reason="invalid_amount")
    world = world_ensure()
    preimage, payment_secret = _new_secret(), _new_secret()
    payment_hash = hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
    now = timezone.now().replace(microsecond=0)
    bolt11 = sign_bolt11(
        private_key=bytes.fromhex(world.private_key),
        network=network,
        payment_hash=payment_hash,
        payment_secret=payment_secret,
        amount_msat=amount_msat,
        expiry_s=expiry_s,
        description=memo,
        created_at=now,
    )
    return OutsideInvoice.objects.create(
        payment_hash=payment_hash,
        preimage=preimage,
        payment_secret=payment_secret,
        bolt11=bolt11,
        memo=memo,
        amount_msat=amount_msat,
        created_at=now,
        expires_at=now + timedelta(seconds=expiry_s),
    )


# --- payments the fake nodes send ---------------------------------------------------------


def payment_send(
    *,
    node_name: str,
    network: Network,
    bolt11: str,
    max_fee_msat: int,
    amount_msat: int | None = None,
    timeout_s: float = 0.0,
) -> FakePayment:
    """Node `node_name` pays `bolt11`. Refusals that leave nothing sent raise FakeNodeError
    (invalid invoice, expired, amount problems, already paid or in flight, own invoice);
    routing outcomes are recorded on the FakePayment: failed (fee over `max_fee_msat`,
    insufficient_balance, a `fail_next` toggle, no_route, the payee refusing), succeeded
    (preimage), or pending when a `hang_next` toggle holds it; then this waits up to
    `timeout_s` for a hung payment to be resolved."""
    decoded = _decode(bolt11, network=network)
    if decoded.expires_at <= timezone.now():
        raise FakeNodeError("the invoice has expired", reason="invoice_expired")
    if decoded.amount_msat is None:
        if amount_msat is None:
            raise FakeNodeError("the invoice has no amount: give one", reason="amount_required")
        amount = amount_msat
    else:
        if amount_msat is not None and amount_msat != decoded.amount_msat:
            raise FakeNodeError("the amount differs from the invoice's", reason="invalid_amount")
        amount = decoded.amount_msat
    if amount <= 0 or max_fee_msat < 0:
        raise FakeNodeError("amounts must be positive", reason="invalid_amount")
    payer = selectors.node_find(name=node_name)
    if payer is None:
        raise FakeNodeError(f"no simulated node called {node_name}", reason="not_found")
    payee_invoice = (
        FakeInvoice.objects.filter(payment_hash=decoded.payment_hash, node__pubkey=decoded.payee)
        .select_related("node")
        .first()
    )
    outside = None
    if payee_invoice is None:
        outside = (
            OutsideInvoice.objects.filter(payment_hash=decoded.payment_hash).first()
            if decoded.payee == world_ensure().pubkey
            else None
        )
    lock_ids = [payer.pk] + ([payee_invoice.node_id] if payee_invoice else [])
    now = timezone.now()
    with transaction.atomic():
        nodes = _lock_nodes(*lock_ids)
        payer = nodes[payer.pk]
        if payer.down:
            raise FakeNodeDown(payer.name)
        if payee_invoice is not None and payee_invoice.node_id == payer.pk:
            raise FakeNodeError("a node cannot pay its own invoice", reason="self_payment")
        payment = (
            FakePayment.objects.select_for_update()
            .filter(node=payer, payment_hash=decoded.payment_hash)
            .first()
        )
        if payment is not None and payment.status == FakePaymentStatus.SUCCEEDED:
            raise FakeNodeError("this invoice is already paid", reason="already_paid")
        if payment is not None and payment.status == FakePaymentStatus.PENDING:
            raise FakeNodeError("a payment of this invoice is in flight", reason="in_flight")
        if payment is None:
            payment = FakePayment(node=payer, payment_hash=decoded.payment_hash, attempts=0)
        payment.bolt11 = bolt11.strip()
        payment.payee = decoded.payee
        payment.amount_msat = amount
        payment.attempts += 1
        payment.preimage, payment.failure_reason, payment.hung = "", "", False
        payment.resolved_at = None
        fee = payer.routing_fee_msat(amount)
        failure = ""
        if fee > max_fee_msat:
            failure = "fee_exceeds_limit"
        elif payer.local_msat < amount + fee:
            failure = "insufficient_balance"
        elif payer.fail_next > 0:
            payer.fail_next -= 1
            payer.save(update_fields=["fail_next"])
            failure = payer.fail_reason
        elif payee_invoice is None and outside is None:
            failure = "no_route"  # nobody here knows this payee's preimage
        if failure:
            _finish(payment, status=FakePaymentStatus.FAILED, reason=failure, now=now)
            payment.save()
            return payment
        payment.fee_msat = fee
        payer.local_msat -= amount + fee  # held by the HTLC while in flight
        payer.save(update_fields=["local_msat"])
        payment.status = FakePaymentStatus.PENDING
        if payer.hang_next > 0:
            payer.hang_next -= 1
            payer.save(update_fields=["hang_next"])
            payment.hung = True
            payment.save()
        else:
            payment.save()
            _deliver(payment, payer=payer, nodes=nodes, now=now)
    if payment.status == FakePaymentStatus.PENDING and timeout_s > 0:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            payment.refresh_from_db()
            if payment.status != FakePaymentStatus.PENDING:
                break
    return payment


def _finish(payment: FakePayment, *, status: FakePaymentStatus, reason: str, now: datetime) -> None:
    payment.status = status
    payment.failure_reason = reason
    payment.hung = False
    payment.resolved_at = now
    if status == FakePaymentStatus.FAILED:
        payment.fee_msat = None


def _deliver(
    payment: FakePayment, *, payer: FakeNode, nodes: dict[int, FakeNode], now: datetime
) -> None:
    """Complete a pending payment (payer and payee nodes locked, amount + fee already taken
    from the payer's local balance): the payee settles and gives the preimage, or refuses."""
    total = payment.amount_msat + (payment.fee_msat or 0)
    decoded_hash = payment.payment_hash
    payee_invoice = FakeInvoice.objects.filter(
        payment_hash=decoded_hash, node__pubkey=payment.payee
    ).first()
    preimage = ""
    refused: str | None = None
    if payee_invoice is not None:
        payee = nodes.get(payee_invoice.node_id)
        if payee is None:  # pragma: no cover - callers lock the payee
            raise RuntimeError("payee node not locked")
        refused = _receive(
            payee=payee, invoice=payee_invoice, amount_msat=payment.amount_msat, now=now
        )
        preimage = payee_invoice.preimage
    else:
        outside = (
            OutsideInvoice.objects.select_for_update().filter(payment_hash=decoded_hash).first()
            if payment.payee == world_ensure().pubkey
            else None
        )
        if outside is None:
            refused = "no_route"
        elif (
            outside.paid_at is not None
            or outside.expires_at <= now
            or not _amount_acceptable(outside.amount_msat, payment.amount_msat)
        ):
            refused = "incorrect_payment_details"
        else:
            outside.paid_at, outside.paid_by = now, payer
            outside.amount_received_msat = payment.amount_msat
            outside.save(update_fields=["paid_at", "paid_by", "amount_received_msat"])
            preimage = outside.preimage
    if refused:
        payer.local_msat += total
        payer.save(update_fields=["local_msat"])
        _finish(payment, status=FakePaymentStatus.FAILED, reason=refused, now=now)
    else:
        payer.remote_msat += total
        payer.save(update_fields=["remote_msat"])
        _finish(payment, status=FakePaymentStatus.SUCCEEDED, reason="", now=now)
        payment.preimage = preimage
    payment.save()


def payments_resolve(
    *,
    succeed: bool,
    payment_hash: str | None = None,
    node_name: str | None = None,
    reason: str = HUNG_FAILURE_REASON,
) -> list[FakePayment]:
    """Resolve hung payments (all, one node's, or one hash): deliver them (the payee may still
    refuse) or fail them with `reason`. Each in its own short transaction."""
    hung = FakePayment.objects.filter(status=FakePaymentStatus.PENDING, hung=True)
    if payment_hash is not None:
        hung = hung.filter(payment_hash=payment_hash)
    if node_name is not None:
        hung = hung.filter(node__name=node_name)
    resolved = []
    for candidate in hung.order_by("pk"):
        payee_node_id = (
            FakeInvoice.objects.filter(
                payment_hash=candidate.payment_hash, node__pubkey=candidate.payee
            )
            .values_list("node_id", flat=True)
            .first()
        )
        now = timezone.now()
        with transaction.atomic():
            nodes = _lock_nodes(candidate.node_id, *([payee_node_id] if payee_node_id else []))
            payment = FakePayment.objects.select_for_update().get(pk=candidate.pk)
            if payment.status != FakePaymentStatus.PENDING:
                continue  # resolved concurrently
            payer = nodes[payment.node_id]
            if succeed:
                _deliver(payment, payer=payer, nodes=nodes, now=now)
            else:
                payer.local_msat += payment.amount_msat + (payment.fee_msat or 0)
                payer.save(update_fields=["local_msat"])
                _finish(payment, status=FakePaymentStatus.FAILED, reason=reason, now=now)
                payment.save()
        resolved.append(payment)
    return resolved


# --- on chain -----------------------------------------------------------------------------


def chain_mine(*, blocks: int) -> int:
    """Mine `blocks` blocks; every unconfirmed transaction goes into the first. Returns the
    new height."""
    if blocks < 1:
        raise ValueError("mine at least one block")
    world_ensure()
    with transaction.atomic():
        world = FakeWorld.objects.select_for_update().get(pk=1)
        FakeTransaction.objects.filter(block_height__isnull=True).update(
            block_height=world.block_height + 1
        )
        world.block_height += blocks
        world.save(update_fields=["block_height"])
        return world.block_height


def address_new(*, node_name: str, network: Network) -> str:
    with transaction.atomic():
        node = _lock_node(node_name)
        if node.down:
            raise FakeNodeDown(node.name)
        index = node.next_address_index
        address = chain.derive_address(
            node_private_key=node.private_key, index=index, network=network
        )
        node.next_address_index = index + 1
        node.save(update_fields=["next_address_index"])
        FakeAddress.objects.create(node=node, address=address, index=index)
    return address


def _new_txid() -> str:
    return secrets.token_bytes(32).hex()


def _checked_outputs(
    outputs: Sequence[tuple[str, int]], *, network: Network
) -> list[tuple[str, int]]:
    if not outputs:
        raise FakeNodeError("a transaction needs at least one output", reason="invalid_output")
    checked = []
    for address, amount_sat in outputs:
        try:
            normalized = chain.normalize_address(address, network=network)
        except chain.InvalidAddress as error:
            raise FakeNodeError(f"{address}: {error}", reason="invalid_address") from None
        if not isinstance(amount_sat, int) or amount_sat < chain.DUST_LIMIT_SAT:
            raise FakeNodeError(
                f"output to {address} is below the dust limit ({chain.DUST_LIMIT_SAT} sat)",
                reason="dust_output",
            )
        checked.append((normalized, amount_sat))
    if len({address for address, _ in checked}) != len(checked):
        raise FakeNodeError("an address appears twice", reason="duplicate_address")
    return checked


def onchain_receive(*, address: str, amount_sat: int, network: Network) -> FakeTransaction:
    """The outside wallet pays `address` (unconfirmed until mined)."""
    [(normalized, amount)] = _checked_outputs([(address, amount_sat)], network=network)
    with transaction.atomic():
        tx = FakeTransaction.objects.create(txid=_new_txid(), node=None)
        FakeTxOutput.objects.create(transaction=tx, vout=0, address=normalized, amount_sat=amount)
    return tx


def onchain_send_many(
    *,
    node_name: str,
    network: Network,
    outputs: Sequence[tuple[str, int]],
    target_conf: int,
    label: str,
) -> FakeTransaction:
    """One transaction from the node's wallet paying every output, labelled `label`; the fee
    is the estimate for `target_conf`. Refuses what LND's SendMany refuses (bad or duplicate
    addresses, dust, insufficient confirmed funds)."""
    checked = _checked_outputs(outputs, network=network)
    fee_sat, _rate = selectors.fee_estimate_sat(output_count=len(checked), target_conf=target_conf)
    with transaction.atomic():
        node = _lock_node(node_name)
        if node.down:
            raise FakeNodeDown(node.name)
        available = selectors.onchain_balance(node=node).confirmed_sat
        if available < sum(amount for _, amount in checked) + fee_sat:
            raise FakeNodeError(
                "not enough confirmed funds in the wallet", reason="insufficient_balance"
            )
        tx = FakeTransaction.objects.create(
            txid=_new_txid(), node=node, label=label[:200], fee_sat=fee_sat
        )
        FakeTxOutput.objects.bulk_create(
            FakeTxOutput(transaction=tx, vout=vout, address=address, amount_sat=amount)
            for vout, (address, amount) in enumerate(checked)
        )
    return tx
