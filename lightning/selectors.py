"""Reads of the lightning app."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection

from accounts.models import User
from accounts.selectors import (
    ALLOWANCE_WIDTH,
    WithdrawalAllowance,
    allowance_columns,
    allowance_of,
)
from config.sqlrows import ModelSql, code_literals
from ledger.models import Account
from ledger.services import USER_ACCOUNT_PREFIX, user_account_code
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


# Only the columns a payment reads (lightning.payments): every column loaded costs CPU on
# every payment (a timestamp ~5 µs through Django's time-zone loader). The rest is deferred.
_INVOICE = ModelSql(
    Invoice,
    "i",
    # bolt11: a payment of exactly this string needs no signature check (lightning.payments)
    only=["payment_hash", "bolt11", "node_id", "user_id", "amount_msat", "status", "expires_at"],
)
_NODE = ModelSql(Node, "n", only=["name", "kind", "connection"])  # what node_backend reads
_ACCOUNT_COLUMNS = ["code", "kind", "owner_id", "allow_negative", "cached", "balance_msat"]
_PAYER_ACCOUNT = ModelSql(Account, "pa", only=_ACCOUNT_COLUMNS)
_PAYEE_ACCOUNT = ModelSql(Account, "ya", only=_ACCOUNT_COLUMNS)


@dataclass(frozen=True, slots=True)
class WithdrawalFacts:
    allowance: WithdrawalAllowance
    paid_before: bool  # a payment of this hash, by anyone, is pending or succeeded
    # Our deposit invoice of this hash, with its node; only the columns a payment reads.
    ours: Invoice | None
    payer_account: Account | None  # None only before the payer's first movement
    payee_account: Account | None  # the balance account of `ours.user`


def withdrawal_facts(*, user: User, payment_hash: str) -> WithdrawalFacts:
    """Everything a withdrawal checks before it moves money, in one round trip (it is on
    every payment's path, so hand-written: config.sqlrows): the payer's allowance and
    account; whether anyone already paid this hash (it is unique across the whole service);
    and our own deposit invoice of this hash, if any, with its node and its user's account."""
    allowance_sql, allowance_params = allowance_columns(user=user)
    live = code_literals(LIVE_PAYMENT_STATUSES)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {allowance_sql},"
            f" EXISTS (SELECT 1 FROM {Payment._meta.db_table} p"
            f"  WHERE p.payment_hash = %s AND p.status IN ({live})),"
            f" {_INVOICE.select}, {_NODE.select},"
            f" {_PAYER_ACCOUNT.select}, {_PAYEE_ACCOUNT.select}"
            " FROM (SELECT 1) one"
            f" LEFT JOIN {_INVOICE.table} i ON i.payment_hash = %s"
            f" LEFT JOIN {_NODE.table} n ON n.id = i.node_id"
            f" LEFT JOIN {_PAYER_ACCOUNT.table} pa ON pa.code = %s"
            f" LEFT JOIN {_PAYEE_ACCOUNT.table} ya ON ya.owner_id = i.user_id"
            " AND ya.code LIKE %s",
            [
                *allowance_params,
                payment_hash,
                payment_hash,
                user_account_code(user),
                f"{USER_ACCOUNT_PREFIX}%",
            ],
        )
        row = cursor.fetchone()
    position = ALLOWANCE_WIDTH + 1
    ours = None
    if row[position] is not None:
        ours = _INVOICE.instance(row, position)
        ours.node = _NODE.instance(row, position + _INVOICE.width)
    position += _INVOICE.width + _NODE.width
    payer_account = _PAYER_ACCOUNT.instance(row, position) if row[position] is not None else None
    position += _PAYER_ACCOUNT.width
    payee_account = _PAYEE_ACCOUNT.instance(row, position) if row[position] is not None else None
    return WithdrawalFacts(
        allowance=allowance_of(row[:ALLOWANCE_WIDTH]),
        paid_before=bool(row[ALLOWANCE_WIDTH]),
        ours=ours,
        payer_account=payer_account,
        payee_account=payee_account,
    )
