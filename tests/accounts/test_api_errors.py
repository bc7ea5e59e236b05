"""The error-shape matrix: every bad input gets {"error": {code, message, details}} with the
right status, changes nothing, and is never a 500."""

import json

import pytest
from rest_framework.test import APIClient

from accounts.services import api_key_revoke
from ledger.selectors import user_balance_msat
from tests.accounts import testviews
from tests.accounts.conftest import error_of

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]

TRANSFER = "/api/test/transfer"


@pytest.fixture
def payer(api, make_user, fund):
    fund(api.user, 1_000_000)
    api.recipient = make_user()
    return api


def post_raw(client, body: str, content_type="application/json", **extra):
    return client.post(TRANSFER, data=body, content_type=content_type, **extra)


def assert_nothing_done(client, before_msat=1_000_000):
    assert testviews.executions["count"] == 0
    assert user_balance_msat(user=client.user) == before_msat


def test_valid_transfer_works(payer):
    body = {"to": str(payer.recipient.uuid), "amount_msat": 1500}
    response = payer.post(TRANSFER, body, format="json")
    assert response.status_code == 201, response.content
    assert user_balance_msat(user=payer.user) == 1_000_000 - 1500
    assert user_balance_msat(user=payer.recipient) == 1500


@pytest.mark.parametrize(
    "body",
    ['{"amount_msat": ', "not json", '{"a": NaN}', "{'single': 'quotes'}", "\x00\x01"],
)
def test_malformed_json(payer, body):
    response = post_raw(payer, body)
    assert response.status_code == 400
    assert error_of(response)["code"] == "malformed_json"
    assert_nothing_done(payer)


def test_enormous_integer_literal_is_malformed_not_a_crash(payer):
    body = '{"to": "' + str(payer.recipient.uuid) + '", "amount_msat": ' + "9" * 5000 + "}"
    response = post_raw(payer, body)
    assert response.status_code == 400
    assert error_of(response)["code"] in {"malformed_json", "validation_error"}
    assert_nothing_done(payer)


def test_unknown_field(payer):
    body = {"to": str(payer.recipient.uuid), "amount_msat": 1000, "ammount": 5}
    response = payer.post(TRANSFER, body, format="json")
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert error["details"] == {"ammount": ["Unknown field."]}
    assert_nothing_done(payer)


@pytest.mark.parametrize(
    "amount",
    ["100", "1.5", 1.5, 1.0, True, False, None, [], {}, "1e3", -1, 0, 2**63, 2**63 - 1, 10**30],
)
def test_amount_must_be_a_sane_integer(payer, amount):
    body = {"to": str(payer.recipient.uuid), "amount_msat": amount}
    response = post_raw(payer, json.dumps(body))
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert "amount_msat" in error["details"]
    assert_nothing_done(payer)


def test_configured_max_amount(payer, settings):
    settings.API_AMOUNT_MAX_MSAT = 10_000
    body = {"to": str(payer.recipient.uuid), "amount_msat": 10_001}
    response = payer.post(TRANSFER, body, format="json")
    assert response.status_code == 400
    assert "at most 10000" in error_of(response)["details"]["amount_msat"][0]
    body["amount_msat"] = 10_000
    assert payer.post(TRANSFER, body, format="json").status_code == 201


def test_missing_field_and_wrong_type_for_other_fields(payer):
    response = payer.post(TRANSFER, {"to": "not-a-uuid"}, format="json")
    assert response.status_code == 400
    details = error_of(response)["details"]
    assert set(details) == {"to", "amount_msat"}
    assert_nothing_done(payer)


@pytest.mark.parametrize("body", ["[1, 2]", '"text"', "42", "null"])
def test_body_that_is_not_an_object(payer, body):
    response = post_raw(payer, body)
    assert response.status_code == 400
    assert error_of(response)["code"] == "validation_error"
    assert_nothing_done(payer)


def test_form_encoded_body_is_refused(payer):
    response = payer.post(TRANSFER, {"amount_msat": "5"})  # multipart by default
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"
    assert_nothing_done(payer)


def test_missing_auth(payer):
    client = APIClient()
    response = client.post(TRANSFER, {"amount_msat": 1}, format="json")
    assert response.status_code == 401
    assert error_of(response)["code"] == "authentication_required"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert_nothing_done(payer)


@pytest.mark.parametrize(
    "header",
    [
        "Bearer sl_00000000_" + "A" * 43,  # well-formed, unknown
        "Bearer garbage",
        "Bearer",
        "Bearer a b",
        "Basic dXNlcjpwYXNz",
        "Token sl_00000000_" + "A" * 43,
    ],
)
def test_bad_key(payer, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.post(TRANSFER, {"amount_msat": 1}, format="json")
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"
    assert_nothing_done(payer)


def test_tampered_key(payer):
    client = APIClient()
    last = payer.plaintext[-1]
    client.credentials(
        HTTP_AUTHORIZATION="Bearer " + payer.plaintext[:-1] + ("B" if last != "B" else "C")
    )
    response = client.get("/api/v1/balance")
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"


def test_revoked_key(payer):
    api_key_revoke(api_key=payer.key)
    response = payer.post(
        TRANSFER, {"to": str(payer.recipient.uuid), "amount_msat": 1}, format="json"
    )
    assert response.status_code == 401
    error = error_of(response)
    assert error["code"] == "invalid_api_key"
    assert "revoked" in error["message"]
    assert_nothing_done(payer)


def test_inactive_user(payer):
    payer.user.is_active = False
    payer.user.save()
    response = payer.get("/api/v1/balance")
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"


def test_missing_scope(payer, issue_key):
    _, read_only = issue_key(payer.user, scopes=["read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {read_only}")
    response = client.post(
        TRANSFER, {"to": str(payer.recipient.uuid), "amount_msat": 1}, format="json"
    )
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "scope_required"
    assert error["details"] == {"required_scope": "send"}
    assert error["message"] == "This API key lacks the 'send' scope needed here."
    assert_nothing_done(payer)


def test_send_only_key_cannot_read(make_user, issue_key):
    _, send_only = issue_key(make_user(), scopes=["send"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {send_only}")
    response = client.get("/api/v1/balance")
    assert response.status_code == 403
    assert error_of(response)["code"] == "scope_required"


def test_rate_limit_per_key(api, issue_key, settings):
    settings.API_RATE_LIMIT = "3/min"
    for _ in range(3):
        assert api.get("/api/v1/balance").status_code == 200
    response = api.get("/api/v1/balance")
    assert response.status_code == 429
    error = error_of(response)
    assert error["code"] == "rate_limited"
    assert int(response["Retry-After"]) >= 1
    assert error["details"]["retry_after_s"] >= 1
    # another key of the same user has its own budget
    _, other = issue_key(api.user, scopes=["read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {other}")
    assert client.get("/api/v1/balance").status_code == 200


@pytest.mark.parametrize(
    "path", ["/api/v1/nope", "/api/v1/account/", "/api/", "/api/v2/balance", "/api/v1/"]
)
def test_unknown_api_path_is_json_404(api, path):
    response = api.get(path)
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_unknown_api_path_is_json_404_with_debug_on(api, settings):
    settings.DEBUG = True
    response = api.get("/api/v1/missing")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_method_not_allowed(api):
    response = api.post("/api/v1/balance", {}, format="json")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


def test_not_acceptable(api):
    response = api.get("/api/v1/balance", HTTP_ACCEPT="text/html")
    assert response.status_code == 406
    assert error_of(response)["code"] == "not_acceptable"


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("insufficient", 409, "insufficient_balance"),
        ("node_down", 503, "node_unavailable"),
        ("unknown_outcome", 504, "outcome_unknown"),
        ("limit", 403, "limit_exceeded"),
        ("bug", 500, "internal_error"),
    ],
)
def test_domain_errors(api, name, status, code):
    response = api.get(f"/api/test/raise/{name}")
    assert response.status_code == status
    error = error_of(response)
    assert error["code"] == code
    assert "secret" not in response.content.decode()  # node/internal text never leaks


def test_domain_error_details(api):
    error = error_of(api.get("/api/test/raise/limit"))
    assert error["details"] == {"max_withdrawal_msat": 1000}
    assert error["message"] == "over your limit"


def test_insufficient_balance_from_the_ledger(payer):
    body = {"to": str(payer.recipient.uuid), "amount_msat": 1_000_001}
    response = payer.post(TRANSFER, body, format="json")
    assert response.status_code == 409
    assert error_of(response)["code"] == "insufficient_balance"
    assert user_balance_msat(user=payer.user) == 1_000_000


def test_plain_django_view_crash_under_api_is_json_500(api):
    client = APIClient(raise_request_exception=False)
    response = client.get("/api/test/plain-boom")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert error_of(response)["code"] == "internal_error"


def test_django_handlers_outside_api_stay_html(rf):
    from accounts.api.errors import handler404

    response = handler404(rf.get("/somewhere"), None)
    assert response.status_code == 404
    assert "application/json" not in response["Content-Type"]
    response = handler404(rf.get("/api/x"), None)
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_unknown_api_path_with_any_method_and_csrf_checks_is_json_404(method):
    client = APIClient(enforce_csrf_checks=True)
    response = getattr(client, method)("/api/v1/nope", "x", content_type="text/plain")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_csrf_failure_view_is_json_under_api(rf):
    from accounts.api.errors import csrf_failure

    response = csrf_failure(rf.post("/api/v1/x"), reason="no cookie")
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert csrf_failure(rf.post("/login/"), reason="no cookie")["Content-Type"].startswith(
        "text/html"
    )
