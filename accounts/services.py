"""Writes of the accounts app: users, API keys, idempotency records. Each function is one
database transaction (or one statement) with keyword-only, typed arguments. Money is never
moved here: that is `ledger.services`."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.keycache import api_key_cache
from accounts.models import (
    ApiKey,
    ApiScope,
    IdempotencyRecord,
    IdempotencyState,
    User,
    UserLimits,
    WithdrawalMinute,
    WithdrawalWindow,
)
from lightning.errors import LimitExceeded

if TYPE_CHECKING:
    from accounts.selectors import WithdrawalAllowance  # the selectors import this module

API_KEY_PREFIX_BYTES = 4  # 8 hex characters, readable, shown in lists
API_KEY_SECRET_BYTES = 32  # 256 bits of entropy
LAST_USED_RESOLUTION = timedelta(seconds=60)


class AccountsError(Exception):
    """Bad input to an accounts service. Carries a stable `code` like the ledger's errors."""

    code = "validation_error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


def api_key_hash(plaintext: str) -> str:
    """SHA-256 of the whole key. Keys are 256-bit random values, so a fast unsalted hash is
    enough: nobody can brute-force or precompute a preimage of a random 256-bit input, and a
    deterministic hash lets a request find its key with one indexed lookup (a slow salted
    password hash would need the key id in the token and cost CPU on every request)."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def _validated_scopes(scopes: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(scopes))
    unknown = sorted(set(chosen) - set(ApiScope.values))
    if unknown:
        raise AccountsError(
            f"Unknown scope {unknown[0]!r}: use read, receive or send.", scopes=unknown
        )
    if not chosen:
        raise AccountsError("Choose at least one scope (read, receive, send).")
    return [scope for scope in ApiScope.values if scope in chosen]


def user_create(*, username: str, password: str | None = None, email: str = "") -> User:
    """Create a user (the ledger account comes with it, see accounts.signals). Without a
    password the user cannot log in to the portal; API keys still work."""
    taken = AccountsError(f"The username {username!r} is taken.", username=username)
    if User.objects.filter(username=username).exists():
        raise taken
    try:
        with transaction.atomic():
            return User.objects.create_user(username=username, password=password, email=email)
    except IntegrityError as error:  # created concurrently
        raise taken from error


def api_key_issue(*, user: User, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
    """Create an API key. Returns the row and the plaintext, which exists only in this return
    value: show it once, never log or store it."""
    name = name.strip()
    if not name or len(name) > 100:
        raise AccountsError("Give the key a name of 1 to 100 characters.")
    chosen = _validated_scopes(scopes)
    for _ in range(3):
        prefix = secrets.token_hex(API_KEY_PREFIX_BYTES)
        plaintext = f"sl_{prefix}_{secrets.token_urlsafe(API_KEY_SECRET_BYTES)}"
        try:
            with transaction.atomic():
                api_key = ApiKey.objects.create(
                    user=user,
                    name=name,
                    prefix=prefix,
                    key_hash=api_key_hash(plaintext),
                    scopes=chosen,
                )
        except IntegrityError:  # a 256-bit collision: practically never, but never reuse
            continue
        return api_key, plaintext
    raise RuntimeError("could not generate a unique API key")


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke a key (idempotent: the first revocation time is kept). This process forgets its
    cached keys at once; the others when the database's notification arrives."""
    now = timezone.now()
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now)
    api_key_cache.invalidate()
    api_key.refresh_from_db(fields=["revoked_at"])
    return api_key


def api_key_touch(*, api_key: ApiKey) -> None:
    """Record use of a key, at most one write a minute per key: the UPDATE's own WHERE
    clause skips it when another request already did it recently."""
    now = timezone.now()
    threshold = now - LAST_USED_RESOLUTION
    if api_key.last_used_at is not None and api_key.last_used_at > threshold:
        return
    ApiKey.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=threshold), pk=api_key.pk
    ).update(last_used_at=now)
    api_key.last_used_at = now


def user_limits_set(
    *,
    user: User,
    max_withdrawal_msat: int | None,
    daily_withdrawal_msat: int | None,
) -> UserLimits:
    """Set a user's withdrawal limits (None: the service default)."""
    for value in (max_withdrawal_msat, daily_withdrawal_msat):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise AccountsError("Limits are integers of millisatoshi.")
        if value is not None and value < 0:
            raise AccountsError("Limits cannot be negative.")
    limits, _ = UserLimits.objects.update_or_create(
        user=user,
        defaults={
            "max_withdrawal_msat": max_withdrawal_msat,
            "daily_withdrawal_msat": daily_withdrawal_msat,
        },
    )
    return limits


# --- idempotency -------------------------------------------------------------------------


def idempotency_record_begin(
    *, user: User, key: str, method: str, path: str, request_hash: str
) -> tuple[IdempotencyRecord, bool]:
    """Claim `key` for this request. Returns (record, created). The insert commits on its own
    before the operation runs (call it outside any transaction), so of concurrent requests
    with the same key exactly one creates the record; the others wait on the unique index
    until it commits and then get the existing record (created=False)."""
    try:
        with transaction.atomic():
            record = IdempotencyRecord.objects.create(
                user=user, key=key, method=method, path=path[:500], request_hash=request_hash
            )
        return record, True
    except IntegrityError:
        return IdempotencyRecord.objects.get(user=user, key=key), False


def idempotency_record_complete(
    *, record: IdempotencyRecord, status: int, body: object
) -> IdempotencyRecord:
    """Store the response every replay of this key will get."""
    now = timezone.now()
    IdempotencyRecord.objects.filter(pk=record.pk, state=IdempotencyState.IN_PROGRESS).update(
        state=IdempotencyState.COMPLETED,
        response_status=status,
        response_body=body,
        completed_at=now,
    )
    record.refresh_from_db()
    return record


def idempotency_record_release(*, record: IdempotencyRecord) -> None:
    """Forget an in-progress record whose request failed with a server error, so that the
    client may retry with the same key."""
    IdempotencyRecord.objects.filter(pk=record.pk, state=IdempotencyState.IN_PROGRESS).delete()


# --- the daily withdrawal window -----------------------------------------------------------

DAILY_WINDOW = timedelta(hours=24)
# A withdrawal that fails less than this before it would leave the window anyway does not
# give its amount back early (see withdrawal_window_release).
RELEASE_MARGIN = timedelta(hours=1)
_WINDOW = WithdrawalWindow._meta.db_table
_MINUTES = WithdrawalMinute._meta.db_table
_WITHIN_LIMIT = "accounts_withdrawalwindow_within_limit"


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def window_start(now: datetime) -> datetime:
    """The oldest minute that still counts at `now`. A withdrawal counts until 24 hours after
    the end of its minute: at most a minute longer than 24 hours, never shorter."""
    return minute_of(now - DAILY_WINDOW)


def expired_minutes_sql(*, window: str, start: str) -> str:
    """SQL for what the window row `window` still counts that is older than `start` (an SQL
    expression): the minutes that left the window since the row was last written. Those rows
    are at least 24 hours old, so any snapshot sees them as they are."""
    return (
        f"COALESCE((SELECT SUM(m.amount_msat) FROM {_MINUTES} m WHERE m.user_id = {window}.user_id"
        f" AND m.minute >= {window}.counted_from AND m.minute < {start}), 0)"
    )


def withdrawal_window_count_sql(
    *, user_id: int, amount_msat: int, daily_limit_msat: int, now: datetime, after: str = ""
) -> list[tuple[str, list]]:
    """The statements that count a withdrawal of `amount_msat` made at `now` against the
    user's daily limit: (SQL, parameters) pairs, to run in this order in one transaction or
    as CTEs of one statement (`after`: the name of a CTE whose row must exist first, so the
    count happens only if it does and in that order; lock order is: the caller's rows, this
    window row, then the ledger's accounts). The window row's lock serializes a user's
    withdrawals; the CHECK `within_limit` fails the statement (IntegrityError, see
    raise_if_over_daily_limit) when the count would pass the limit."""
    ops = connection.ops
    start = ops.adapt_datetimefield_value(window_start(now))
    minute = ops.adapt_datetimefield_value(minute_of(now))
    source = "SELECT %s, %s, %s, %s FROM " + after if after else "VALUES (%s, %s, %s, %s)"
    count = (
        f"INSERT INTO {_WINDOW} AS w (user_id, counted_from, total_msat, limit_msat) {source}"
        " ON CONFLICT (user_id) DO UPDATE SET"
        f" total_msat = w.total_msat + excluded.total_msat"
        f" - {expired_minutes_sql(window='w', start='excluded.counted_from')},"
        " counted_from = CASE WHEN excluded.counted_from > w.counted_from"
        " THEN excluded.counted_from ELSE w.counted_from END,"
        " limit_msat = excluded.limit_msat"
    )
    minute_source = "SELECT %s, %s, %s FROM window_counted" if after else "VALUES (%s, %s, %s)"
    if after:
        count += " RETURNING user_id"
    add_minute = (
        f"INSERT INTO {_MINUTES} (user_id, minute, amount_msat) {minute_source}"
        " ON CONFLICT (user_id, minute) DO UPDATE"
        f" SET amount_msat = {_MINUTES}.amount_msat + excluded.amount_msat"
    )
    return [
        (count, [user_id, start, amount_msat, daily_limit_msat]),
        (add_minute, [user_id, minute, amount_msat]),
    ]


def withdrawal_window_count_ctes(
    *, user_id: int, amount_msat: int, daily_limit_msat: int, now: datetime, after: str
) -> tuple[str, list]:
    """PostgreSQL: the same as CTEs `window_counted` and `window_minute` of a larger
    statement, run only if the CTE `after` returns a row."""
    (count, count_params), (add_minute, minute_params) = withdrawal_window_count_sql(
        user_id=user_id,
        amount_msat=amount_msat,
        daily_limit_msat=daily_limit_msat,
        now=now,
        after=after,
    )
    return (
        f"window_counted AS ({count}), window_minute AS ({add_minute})",
        [*count_params, *minute_params],
    )


def withdrawal_window_count(
    *, user: User, amount_msat: int, daily_limit_msat: int, now: datetime | None = None
) -> None:
    """Count a withdrawal against the user's daily limit, inside the caller's transaction
    (which then holds the user's window row until it ends). Raises LimitExceeded, with
    nothing counted, when it would pass the limit."""
    if not connection.in_atomic_block:
        raise RuntimeError("withdrawal_window_count must run inside the withdrawal's transaction")
    statements = withdrawal_window_count_sql(
        user_id=user.pk,
        amount_msat=amount_msat,
        daily_limit_msat=daily_limit_msat,
        now=now or timezone.now(),
    )
    try:
        with transaction.atomic(), connection.cursor() as cursor:  # a savepoint
            for sql, params in statements:
                cursor.execute(sql, params)
    except IntegrityError as error:
        raise_if_over_daily_limit(error, user=user, daily_limit_msat=daily_limit_msat)
        raise


def raise_if_over_daily_limit(error: IntegrityError, *, user: User, daily_limit_msat: int) -> None:
    """Turn the window's CHECK failure into LimitExceeded (what was withdrawn read afresh,
    unlocked: informative only); any other IntegrityError is left to the caller."""
    if _WITHIN_LIMIT not in str(error):
        return
    from accounts.selectors import withdrawal_allowance

    withdrawn = withdrawal_allowance(user=user).withdrawn_today_msat
    raise _over_daily_limit(daily_limit_msat=daily_limit_msat, withdrawn_msat=withdrawn) from error


def withdrawal_window_release(
    *, user_id: int, amount_msat: int, counted_at: datetime, now: datetime | None = None
) -> bool:
    """Give back to the daily limit a withdrawal counted at `counted_at` that failed or was
    cancelled (its money came back), inside the caller's transaction. One that would leave
    the window within RELEASE_MARGIN anyway is left to expire: a concurrent count's snapshot
    may not see this change yet, and it must never drop a minute it cannot see as it is.
    Returns whether anything was given back."""
    if not connection.in_atomic_block:
        raise RuntimeError("withdrawal_window_release must run inside the refund's transaction")
    ops = connection.ops
    minute = minute_of(counted_at)
    if minute < window_start(now or timezone.now()) + RELEASE_MARGIN:
        return False
    at = ops.adapt_datetimefield_value(minute)
    with connection.cursor() as cursor:
        # The window row first (the lock order of every count), and only while it still
        # counts that minute and the minute holds the amount.
        cursor.execute(
            f"UPDATE {_WINDOW} SET total_msat = total_msat - %s"
            " WHERE user_id = %s AND counted_from <= %s AND EXISTS ("
            f"SELECT 1 FROM {_MINUTES} WHERE user_id = %s AND minute = %s AND amount_msat >= %s)",
            [amount_msat, user_id, at, user_id, at, amount_msat],
        )
        if cursor.rowcount != 1:
            return False
        cursor.execute(
            f"UPDATE {_MINUTES} SET amount_msat = amount_msat - %s"
            " WHERE user_id = %s AND minute = %s",
            [amount_msat, user_id, at],
        )
    return True


def withdrawal_limits_check(*, allowance: WithdrawalAllowance, amount_msat: int) -> None:
    """Refuse, before anything is written, a withdrawal over the user's limits as `allowance`
    read them. The daily limit is enforced again,
    under a lock, when the withdrawal is counted (withdrawal_window_count)."""
    limits = allowance.limits
    if amount_msat > limits.max_withdrawal_msat:
        raise LimitExceeded(
            "this is more than your limit for one withdrawal",
            max_withdrawal_msat=limits.max_withdrawal_msat,
        )
    if allowance.withdrawn_today_msat + amount_msat > limits.daily_withdrawal_msat:
        raise _over_daily_limit(
            daily_limit_msat=limits.daily_withdrawal_msat,
            withdrawn_msat=allowance.withdrawn_today_msat,
        )


def _over_daily_limit(*, daily_limit_msat: int, withdrawn_msat: int) -> LimitExceeded:
    """The one refusal of the daily limit, whether the early check or the count under the
    window row's lock refused."""
    return LimitExceeded(
        "this would pass your withdrawal limit for the last 24 hours",
        daily_withdrawal_msat=daily_limit_msat,
        daily_withdrawn_msat=withdrawn_msat,
    )
