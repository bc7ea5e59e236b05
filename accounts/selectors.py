"""Reads of the accounts app. Nothing here writes."""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from accounts.keycache import api_key_cache
from accounts.models import ApiKey, User, UserLimits, WithdrawalWindow
from accounts.services import api_key_hash, expired_minutes_sql, window_start
from config.sqlrows import ModelSql
from ledger.models import Journal
from ledger.selectors import StatementLine, account_statement, user_account
from lightning.models import Payment, PaymentStatus

_API_KEY_RE = re.compile(r"sl_[0-9a-f]{8}_[A-Za-z0-9_-]{20,100}")
# A Lightning withdrawal starts with the journal of kind `withdrawal_reserve` under the key
# `withdrawal:<payment id>` (ledger.pending_transfer_reserve): amount + fee reserve leave the
# user's balance. It is always on the user's statement (the settlement is not when the whole
# reserve was used), so that row carries the fee once the payment succeeded.
WITHDRAWAL_RESERVE_KIND = "withdrawal_reserve"
_WITHDRAWAL_KEY_RE = re.compile(r"withdrawal:(\d+)")


# --- API keys ------------------------------------------------------------------------------


def api_key_for_plaintext(plaintext: str) -> ApiKey | None:
    """The key (with its user) whose hash matches `plaintext`, revoked or not; None if the
    text is not a key of ours. The lookup is by the SHA-256 of the key, so the database
    compares hashes, never the secret; the final comparison is constant-time as well. A key
    found before comes from this process's cache (accounts/keycache.py), as fresh instances."""
    if not _API_KEY_RE.fullmatch(plaintext):
        return None
    digest = api_key_hash(plaintext)
    row = api_key_cache.get(digest)
    if row is None:
        ticket = api_key_cache.ticket()
        # On every uncached API request: hand-written (config.sqlrows), the same as
        # ApiKey.objects.select_related("user").filter(key_hash=digest).first().
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {_KEY_COLUMNS.select}, {_USER_COLUMNS.select}"
                f" FROM {_KEY_COLUMNS.table} k JOIN {_USER_COLUMNS.table} u ON u.id = k.user_id"
                " WHERE k.key_hash = %s",
                [digest],
            )
            row = cursor.fetchone()
        if row is None:
            return None
        api_key_cache.store(digest, tuple(row), ticket=ticket)
    api_key = _KEY_COLUMNS.instance(row)
    api_key.user = _USER_COLUMNS.instance(row, _KEY_COLUMNS.width)
    if not hmac.compare_digest(api_key.key_hash, digest):
        return None
    return api_key


def api_key_used(*, api_key: ApiKey) -> None:
    """After `api_key_touch` wrote a new last-used time: the cached row follows, so that the
    next request does not write it again."""
    api_key_cache.replace(api_key.key_hash, position=_LAST_USED_AT, value=api_key.last_used_at)


_KEY_COLUMNS = ModelSql(ApiKey, "k")
_USER_COLUMNS = ModelSql(User, "u")
_LAST_USED_AT = _KEY_COLUMNS.attnames.index("last_used_at")


def api_keys_of(*, user: User) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(user=user).order_by("revoked_at", "-created_at", "-id")


# --- limits --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    max_withdrawal_msat: int
    daily_withdrawal_msat: int


@dataclass(frozen=True, slots=True)
class WithdrawalAllowance:
    """What every withdrawal checks, read in one round trip: the user's limits, what counts
    against the daily one, and the balance (0 before the user's account exists)."""

    limits: Limits
    withdrawn_today_msat: int
    balance_msat: int


# The number of SELECT-list expressions of `allowance_columns`.
ALLOWANCE_WIDTH = 4


def allowance_columns(*, user: User, now: datetime | None = None) -> tuple[str, list]:
    """The user's withdrawal allowance as SELECT-list expressions and their parameters, so
    a statement can read it along with other things in one round trip (`allowance_of` turns
    the ALLOWANCE_WIDTH values back into a WithdrawalAllowance). What counts against the
    daily limit is the user's window row less the minutes that have left the window since it
    was written: a few rows, however many withdrawals the user made."""
    from ledger.models import Account
    from ledger.services import user_account_code

    start = connection.ops.adapt_datetimefield_value(window_start(now or timezone.now()))
    limits = UserLimits._meta.db_table
    sql = f"""
  (SELECT max_withdrawal_msat FROM {limits} WHERE user_id = %s),
  (SELECT daily_withdrawal_msat FROM {limits} WHERE user_id = %s),
  (SELECT w.total_msat - {expired_minutes_sql(window="w", start="%s")}
     FROM {WithdrawalWindow._meta.db_table} w WHERE w.user_id = %s),
  (SELECT balance_msat FROM {Account._meta.db_table} WHERE code = %s)"""
    params = [user.pk, user.pk, start, user.pk, user_account_code(user)]
    return sql, params


def allowance_of(values) -> WithdrawalAllowance:
    max_single, daily, withdrawn, balance = values
    return WithdrawalAllowance(
        limits=_limits(max_single, daily),
        withdrawn_today_msat=withdrawn or 0,
        balance_msat=balance or 0,
    )


def withdrawal_allowance(*, user: User, now: datetime | None = None) -> WithdrawalAllowance:
    """The user's limits (their own where set, else the settings'), what counts against the
    daily limit, Lightning and on-chain together (the amounts of their payments, internal
    ones included, and on-chain withdrawals of the last 24 hours, less those that failed or
    were cancelled: those gave the money back; accounts.services.withdrawal_window_count),
    and their balance. The money flows check
    exactly this, so what the user sees is what is checked. One statement: it is on the path
    of every payment."""
    sql, params = allowance_columns(user=user, now=now)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {sql}", params)
        return allowance_of(cursor.fetchone())


def limits_for(user: User) -> Limits:
    """The user's withdrawal limits: their own where set, else the settings'."""
    row = UserLimits.objects.filter(user=user).first()
    if row is None:
        return _limits(None, None)
    return _limits(row.max_withdrawal_msat, row.daily_withdrawal_msat)


def _limits(max_single: int | None, daily: int | None) -> Limits:
    return Limits(
        max_withdrawal_msat=settings.WITHDRAWAL_MAX_MSAT if max_single is None else max_single,
        daily_withdrawal_msat=settings.WITHDRAWAL_DAILY_MAX_MSAT if daily is None else daily,
    )


def daily_withdrawn_msat(*, user: User, now: datetime | None = None) -> int:
    """What counts against the user's daily withdrawal limit (see withdrawal_allowance)."""
    return withdrawal_allowance(user=user, now=now).withdrawn_today_msat


# --- statement -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatementRow:
    id: int  # the journal (one movement of money)
    kind: str
    amount_msat: int  # + raised the balance, - lowered it
    fee_msat: int | None  # routing fee the user paid, on a succeeded withdrawal's row
    balance_after_msat: int | None
    reference_type: str
    reference_id: str
    memo: str
    created_at: datetime
    cursor: int  # posting id: pass as `before` for the rows older than this one


@dataclass(frozen=True, slots=True)
class Statement:
    rows: list[StatementRow]
    next_cursor: int | None


def _withdrawal_fees(lines: list[StatementLine]) -> dict[int, int]:
    """journal id -> the routing fee the user paid, for the succeeded withdrawals on this
    page (two small queries at most, whatever the page length). The user pays the node's fee
    up to the reserve; anything above it is the operator's expense."""
    reserve_ids = [line.journal_id for line in lines if line.kind == WITHDRAWAL_RESERVE_KIND]
    if not reserve_ids:
        return {}
    payment_of: dict[int, int] = {}
    for journal_id, key in Journal.objects.filter(id__in=reserve_ids).values_list(
        "id", "idempotency_key"
    ):
        match = _WITHDRAWAL_KEY_RE.fullmatch(key)
        if match:
            payment_of[journal_id] = int(match.group(1))
    succeeded = Payment.objects.filter(
        id__in=set(payment_of.values()), status=PaymentStatus.SUCCEEDED, fee_msat__isnull=False
    ).values_list("id", "fee_msat", "fee_reserve_msat")
    fee_of = {pk: min(fee, reserve) for pk, fee, reserve in succeeded}
    return {
        journal_id: fee_of[payment_id]
        for journal_id, payment_id in payment_of.items()
        if payment_id in fee_of
    }


def user_statement(*, user: User, before: int | None = None, limit: int = 50) -> Statement:
    """The user's movements, newest first, keyset-paginated (see ledger.account_statement)."""
    page = account_statement(account=user_account(user=user), before=before, limit=limit)
    fees = _withdrawal_fees(page.lines)
    rows = [
        StatementRow(
            id=line.journal_id,
            kind=line.kind,
            amount_msat=line.amount_msat,
            fee_msat=fees.get(line.journal_id),
            balance_after_msat=line.balance_after_msat,
            reference_type=line.reference_type,
            reference_id=line.reference_id,
            memo=line.memo,
            created_at=line.created_at,
            cursor=line.posting_id,
        )
        for line in page.lines
    ]
    return Statement(rows=rows, next_cursor=page.next_cursor)
