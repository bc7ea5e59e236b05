"""Writes of the accounts app: users, API keys, idempotency records. Each function is one
database transaction (or one statement) with keyword-only, typed arguments. Money is never
moved here: that is `ledger.services`."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import (
    ApiKey,
    ApiScope,
    IdempotencyRecord,
    IdempotencyState,
    User,
    UserLimits,
)

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
    """Revoke a key (idempotent: the first revocation time is kept)."""
    now = timezone.now()
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now)
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
