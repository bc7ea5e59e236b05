"""Reads of the lightning app."""

from __future__ import annotations

from django.db import connection

from accounts.models import User
from config.sqlrows import ModelSql
from lightning.models import LIVE_PAYMENT_STATUSES, Invoice, Node, Payment


def user_deposit(*, user: User, payment_hash: str) -> Invoice | None:
    """The user's own deposit invoice; another user's hash is simply not found."""
    return Invoice.objects.filter(user=user, payment_hash=payment_hash.lower()).first()


def user_withdrawal(*, user: User, withdrawal_id: int) -> Payment | None:
    return Payment.objects.filter(user=user, pk=withdrawal_id).first()


def user_deposits(*, user: User, limit: int = 20) -> list[Invoice]:
    return list(Invoice.objects.filter(user=user).order_by("-created_at")[:limit])


def user_withdrawals(*, user: User, limit: int = 20) -> list[Payment]:
    return list(Payment.objects.filter(user=user).order_by("-created_at")[:limit])


_INVOICE = ModelSql(Invoice, "i")
_NODE = ModelSql(Node, "n")
_PAYEE = ModelSql(User, "u")


def payment_hash_lookup(*, payment_hash: str) -> tuple[Invoice | None, bool]:
    """For a withdrawal, in one round trip (it is on every payment's path, so hand-written:
    config.sqlrows): our deposit invoice of this hash, if any, with its node and user; and
    whether any payment of this hash, by anyone, is pending or succeeded (the hash is unique
    across the whole service)."""
    live = ", ".join(["%s"] * len(LIVE_PAYMENT_STATUSES))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_INVOICE.select}, {_NODE.select}, {_PAYEE.select},"
            f" EXISTS (SELECT 1 FROM {Payment._meta.db_table} p"
            f"  WHERE p.payment_hash = %s AND p.status IN ({live}))"
            f" FROM (SELECT 1) one"
            f" LEFT JOIN {_INVOICE.table} i ON i.payment_hash = %s"
            f" LEFT JOIN {_NODE.table} n ON n.id = i.node_id"
            f" LEFT JOIN {_PAYEE.table} u ON u.id = i.user_id",
            [payment_hash, *[str(status) for status in LIVE_PAYMENT_STATUSES], payment_hash],
        )
        row = cursor.fetchone()
    paid = bool(row[-1])
    if row[0] is None:
        return None, paid
    invoice = _INVOICE.instance(row)
    invoice.node = _NODE.instance(row, _INVOICE.width)
    invoice.user = _PAYEE.instance(row, _INVOICE.width + _NODE.width)
    return invoice, paid


def invoice_status_lock(*, invoice_id: int) -> str | None:
    """The invoice's status, its row locked until the caller's transaction ends (None: no
    such invoice). Hand-written: on every internal payment's path."""
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT status FROM {Invoice._meta.db_table} WHERE id = %s{lock}", [invoice_id]
        )
        row = cursor.fetchone()
    return row[0] if row else None
