"""One error shape for the whole API:

    {"error": {"code": "insufficient_balance", "message": "A sentence.", "details": {...}}}

`api_exception_handler` (DRF's EXCEPTION_HANDLER) turns every exception raised in an API view
into it: DRF's own (validation, parse, auth, throttling...), domain errors that carry a `code`
(ledger.errors.LedgerError, lightning's LightningError, or any error with `code` and
`message`), and anything unexpected (logged, answered 500 `internal_error` without details).
`json_not_found` / `json_server_error` give the same shape outside DRF (unknown /api/ paths,
Django's 404/500 handlers)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

from ledger.errors import LedgerError
from lightning.backends.base import LightningError

logger = logging.getLogger(__name__)

# HTTP status of each domain error code (the README's table). A domain error may also carry
# its own `http_status`; codes not listed get 400 (ledger/other) or 502 (Lightning).
DOMAIN_ERROR_STATUS: dict[str, int] = {
    # the request is valid but conflicts with the current state
    "insufficient_balance": status.HTTP_409_CONFLICT,
    "idempotency_conflict": status.HTTP_409_CONFLICT,
    "idempotency_in_progress": status.HTTP_409_CONFLICT,
    "pending_transfer_resolved": status.HTTP_409_CONFLICT,
    "already_reversed": status.HTTP_409_CONFLICT,
    "already_paid": status.HTTP_409_CONFLICT,
    # the request itself is wrong
    "invalid_posting": status.HTTP_400_BAD_REQUEST,
    "invoice_expired": status.HTTP_400_BAD_REQUEST,
    "invalid_invoice": status.HTTP_400_BAD_REQUEST,
    "wrong_network": status.HTTP_400_BAD_REQUEST,
    "amount_required": status.HTTP_400_BAD_REQUEST,
    "limit_exceeded": status.HTTP_403_FORBIDDEN,
    # our side or the node's
    "unbalanced_journal": status.HTTP_500_INTERNAL_SERVER_ERROR,
    "node_unavailable": status.HTTP_503_SERVICE_UNAVAILABLE,
    "node_auth_failed": status.HTTP_503_SERVICE_UNAVAILABLE,
    "node_rejected": status.HTTP_502_BAD_GATEWAY,
    "outcome_unknown": status.HTTP_504_GATEWAY_TIMEOUT,
}

# Sentences for errors whose own message is not for the user's eyes.
_FIXED_MESSAGES: dict[str, str] = {
    "node_unavailable": "The Lightning node is not available right now; nothing was done. "
    "Try again later.",
    "node_auth_failed": "The Lightning node is not available right now; nothing was done. "
    "Try again later.",
    "outcome_unknown": "The Lightning node did not confirm the outcome in time; the payment "
    "stays pending until it does.",
}
INTERNAL_ERROR_MESSAGE = "Something went wrong on our side. Nothing you sent was at fault."


class ApiError(exceptions.APIException):
    """An API error with our code, a sentence, details and a status."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status_code: int = status.HTTP_400_BAD_REQUEST,
        details: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail=message, code=code)
        self.code = code
        self.message = message
        self.status_code = status_code
        self.details = dict(details or {})
        self.headers = dict(headers or {})


class InvalidApiKey(exceptions.AuthenticationFailed):
    default_detail = "This API key is not valid."
    default_code = "invalid_api_key"


class ScopeRequired(exceptions.PermissionDenied):
    default_code = "scope_required"

    def __init__(self, scope: str) -> None:
        scope = str(scope)  # the plain value, not an ApiScope member's repr
        super().__init__(
            detail=f"This API key lacks the '{scope}' scope needed here.", code="scope_required"
        )
        self.scope = scope


def error_body(code: str, message: str, details: Mapping[str, object] | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": _jsonable(details or {})}}


def _jsonable(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(item) for item in value]
    if isinstance(value, str):
        return str(value)  # also turns DRF's ErrorDetail into a plain string
    if value is None or isinstance(value, bool | int):
        return value
    return str(value)


def _validation_details(detail: object) -> dict:
    if isinstance(detail, Mapping):
        return _jsonable(detail)  # type: ignore[return-value]
    return {"non_field_errors": _jsonable(detail if isinstance(detail, list) else [detail])}


def _validation_message(details: dict) -> str:
    fields = [name for name in details if name != "non_field_errors"]
    if fields:
        return f"Some fields are not valid: {', '.join(fields)}. See details."
    first = details.get("non_field_errors") or ["The request is not valid."]
    return str(first[0]) if isinstance(first, list) and first else "The request is not valid."


def _domain_status(error: Exception, code: str) -> int:
    explicit = getattr(error, "http_status", None)
    if isinstance(explicit, int):
        return explicit
    if code in DOMAIN_ERROR_STATUS:
        return DOMAIN_ERROR_STATUS[code]
    return status.HTTP_502_BAD_GATEWAY if isinstance(error, LightningError) else 400


def _is_domain_error(error: Exception) -> bool:
    if isinstance(error, LedgerError | LightningError):
        return True
    return isinstance(getattr(error, "code", None), str) and hasattr(error, "message")


def _domain_response(error: Exception) -> tuple[int, str, str, dict]:
    code: str = error.code  # type: ignore[attr-defined]
    http_status = _domain_status(error, code)
    if http_status >= 500 and code not in _FIXED_MESSAGES:
        logger.error("api: domain error %s became a %d", code, http_status, exc_info=error)
        return http_status, "internal_error", INTERNAL_ERROR_MESSAGE, {}
    message = _FIXED_MESSAGES.get(code) or str(getattr(error, "message", "")) or code
    details = dict(getattr(error, "details", None) or {})
    reason = getattr(error, "reason", "")
    if reason:
        details["reason"] = reason
    return http_status, code, message, details


def _drf_response(exc: exceptions.APIException) -> tuple[int, str, str, dict]:
    if isinstance(exc, ApiError):
        return exc.status_code, exc.code, exc.message, exc.details
    if isinstance(exc, exceptions.ValidationError):
        details = _validation_details(exc.detail)
        return 400, "validation_error", _validation_message(details), details
    if isinstance(exc, exceptions.ParseError):
        return 400, "malformed_json", "The request body is not valid JSON.", {}
    if isinstance(exc, exceptions.NotAuthenticated):
        message = "Authentication required: send your API key as 'Authorization: Bearer <key>'."
        return exc.status_code, "authentication_required", message, {}
    if isinstance(exc, exceptions.AuthenticationFailed):
        return exc.status_code, "invalid_api_key", str(exc.detail), {}
    if isinstance(exc, ScopeRequired):
        return 403, "scope_required", str(exc.detail), {"required_scope": exc.scope}
    if isinstance(exc, exceptions.PermissionDenied):
        return 403, "permission_denied", "You may not do this.", {}
    if isinstance(exc, exceptions.NotFound):
        return 404, "not_found", "There is nothing here.", {}
    if isinstance(exc, exceptions.MethodNotAllowed):
        return 405, "method_not_allowed", str(exc.detail), {}
    if isinstance(exc, exceptions.NotAcceptable):
        return 406, "not_acceptable", "This API only answers in JSON.", {}
    if isinstance(exc, exceptions.UnsupportedMediaType):
        message = "Send the request body as JSON (Content-Type: application/json)."
        return 415, "unsupported_media_type", message, {}
    if isinstance(exc, exceptions.Throttled):
        wait = int(exc.wait) + 1 if exc.wait is not None else None
        message = "Too many requests with this API key. Slow down and retry later."
        return 429, "rate_limited", message, {"retry_after_s": wait}
    codes = exc.get_codes()
    return exc.status_code, codes if isinstance(codes, str) else "error", str(exc.detail), {}


def api_exception_handler(exc: Exception, context: Mapping[str, object]) -> Response:
    """DRF's EXCEPTION_HANDLER: every exception of an API view becomes our error shape."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    headers: dict[str, str] = {}
    if isinstance(exc, exceptions.APIException):
        http_status, code, message, details = _drf_response(exc)
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            headers["WWW-Authenticate"] = auth_header
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            headers["Retry-After"] = str(int(exc.wait) + 1)
        if isinstance(exc, ApiError):
            headers.update(exc.headers)
    elif _is_domain_error(exc):
        http_status, code, message, details = _domain_response(exc)
    else:
        request = context.get("request")
        logger.error(
            "api: unexpected error in %s %s",
            getattr(request, "method", "?"),
            getattr(request, "path", "?"),
            exc_info=exc,
        )
        http_status, code, message, details = 500, "internal_error", INTERNAL_ERROR_MESSAGE, {}
    return Response(error_body(code, message, details), status=http_status, headers=headers)


# --- outside DRF ---------------------------------------------------------------------------


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("not_found", "There is nothing here."), status=404)


def json_server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse(error_body("internal_error", INTERNAL_ERROR_MESSAGE), status=500)


def json_bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("bad_request", "The request is not valid."), status=400)


def json_forbidden(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("permission_denied", "You may not do this."), status=403)


def handler404(request: HttpRequest, exception: Exception | None = None):
    """Django's 404 handler: JSON under /api/, the usual page elsewhere."""
    from django.views.defaults import page_not_found

    if request.path.startswith("/api/"):
        return json_not_found(request, exception)
    return page_not_found(request, exception)


def handler500(request: HttpRequest):
    """Django's 500 handler: JSON under /api/ (never an HTML page or a stack trace)."""
    from django.views.defaults import server_error

    if request.path.startswith("/api/"):
        return json_server_error(request)
    return server_error(request)


def handler400(request: HttpRequest, exception: Exception | None = None):
    from django.views.defaults import bad_request

    if request.path.startswith("/api/"):
        return json_bad_request(request, exception)
    return bad_request(request, exception)


def handler403(request: HttpRequest, exception: Exception | None = None):
    from django.views.defaults import permission_denied

    if request.path.startswith("/api/"):
        return json_forbidden(request, exception)
    return permission_denied(request, exception)


def csrf_failure(request: HttpRequest, reason: str = ""):
    """CSRF_FAILURE_VIEW: JSON under /api/ (API views use no cookies and are exempt; this
    covers anything else there), Django's page elsewhere."""
    from django.views.csrf import csrf_failure as django_csrf_failure

    if request.path.startswith("/api/"):
        return json_forbidden(request)
    return django_csrf_failure(request, reason)
