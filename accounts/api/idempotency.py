"""`Idempotency-Key` for POSTs that move money.

    class WithdrawView(ApiView):
        required_scope = "send"

        @idempotent()
        def post(self, request): ...

How it works (the database decides, so it holds across processes and machines):
1. The first request with a key inserts an IdempotencyRecord (user, key, method, path, hash
   of the body) "in progress" and commits it at once, before the operation runs. The unique
   constraint (user, key) lets exactly one concurrent request insert it.
2. That request runs the operation and stores its response (status and JSON body) on the
   record; a 5xx response is not stored (the record is deleted), so the client may retry
   with the same key.
3. Another request with the same key and the same body gets the stored response with the
   header `Idempotent-Replayed: true`, and runs nothing. If the first is still running it
   polls the record for up to IDEMPOTENCY_WAIT_S seconds, then answers 409
   `idempotency_in_progress` (with Retry-After) if it is still not done.
4. The same key with another body, method or path: 409 `idempotency_conflict`.

The view sees the key as `request.idempotency_key`. Derive the business operation's own
idempotency key from it (e.g. `f"api:{user.uuid}:{key}"` as a journal key): a request whose
process died mid-way, or whose 5xx released the key, is then still carried out at most once
when retried. Call this outside any transaction (Django's ATOMIC_REQUESTS stays off): the
record must commit before the operation starts."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from collections.abc import Callable

from django.conf import settings
from rest_framework import status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api.errors import ApiError
from accounts.models import IdempotencyRecord, IdempotencyState
from accounts.services import (
    idempotency_record_begin,
    idempotency_record_complete,
    idempotency_record_release,
)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY_RE = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII without spaces
_POLL_FIRST_S = 0.02
_POLL_MAX_S = 0.25


def request_body_hash(request: Request) -> str:
    """SHA-256 of the parsed JSON body in canonical form (key order and whitespace do not
    matter; values and types do)."""
    canonical = json.dumps(request.data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _plain_json(data: object) -> object:
    """The response body as stored JSON (dates etc. rendered as the client saw them)."""
    return json.loads(JSONRenderer().render(data)) if data is not None else None


def _replay(record: IdempotencyRecord) -> Response:
    return Response(
        record.response_body,
        status=record.response_status,
        headers={REPLAYED_HEADER: "true"},
    )


def _wait_for_completion(record: IdempotencyRecord) -> IdempotencyRecord | None:
    """Poll until the record completes (returned), disappears (None: its request failed and
    released it) or the wait runs out (returned still in progress)."""
    deadline = time.monotonic() + settings.IDEMPOTENCY_WAIT_S
    pause = _POLL_FIRST_S
    while record.state == IdempotencyState.IN_PROGRESS and time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, _POLL_MAX_S)
        found = IdempotencyRecord.objects.filter(pk=record.pk).first()
        if found is None:
            return None
        record = found
    return record


def _check_same_request(record: IdempotencyRecord, method: str, path: str, body: str) -> None:
    if (record.method, record.path, record.request_hash) != (method, path, body):
        raise ApiError(
            "This Idempotency-Key was already used for a different request. "
            "Use a new key for a new operation.",
            code="idempotency_conflict",
            status_code=status.HTTP_409_CONFLICT,
            details={"idempotency_key": record.key},
        )


def idempotent(*, required: bool = False) -> Callable:
    """Decorate a DRF view's handler method (`post`). `required=True` refuses requests
    without the header (400 validation_error)."""

    def decorator(handler: Callable) -> Callable:
        @functools.wraps(handler)
        def wrapper(view, request: Request, *args, **kwargs) -> Response:
            key = request.headers.get(HEADER)
            if key is None:
                if required:
                    raise ApiError(
                        f"Send an {HEADER} header (a unique string per operation).",
                        code="validation_error",
                        details={HEADER: ["This header is required."]},
                    )
                request.idempotency_key = None
                return handler(view, request, *args, **kwargs)
            if not _KEY_RE.fullmatch(key):
                raise ApiError(
                    f"The {HEADER} must be 1 to 200 printable ASCII characters without spaces.",
                    code="validation_error",
                    details={HEADER: ["Invalid value."]},
                )
            method, path = request.method, request.get_full_path()[:500]
            body_hash = request_body_hash(request)  # parses the body: malformed JSON → 400

            while True:
                record, created = idempotency_record_begin(
                    user=request.user, key=key, method=method, path=path, request_hash=body_hash
                )
                if created:
                    break
                _check_same_request(record, method, path, body_hash)
                waited = _wait_for_completion(record)
                if waited is None:
                    continue  # released by a failed first attempt: claim the key again
                if waited.state == IdempotencyState.COMPLETED:
                    return _replay(waited)
                raise ApiError(
                    "A request with this Idempotency-Key is still being processed. "
                    "Retry in a moment to get its result.",
                    code="idempotency_in_progress",
                    status_code=status.HTTP_409_CONFLICT,
                    details={"idempotency_key": key},
                    headers={"Retry-After": "1"},
                )

            request.idempotency_key = key
            try:
                response = handler(view, request, *args, **kwargs)
            except Exception as error:
                response = view.handle_exception(error)
            if response.status_code >= 500:
                idempotency_record_release(record=record)
            else:
                idempotency_record_complete(
                    record=record, status=response.status_code, body=_plain_json(response.data)
                )
            return response

        return wrapper

    return decorator
