"""A few cases through a real HTTP server (socket, WSGI, headers as a client sends them)."""

import httpx
import pytest

from tests.accounts.conftest import error_of

pytestmark = pytest.mark.urls("tests.accounts.urls")


@pytest.fixture
def http(live_server, committed_db, make_user, issue_key, fund):
    user = make_user()
    recipient = make_user()
    fund(user, 50_000)
    _, plaintext = issue_key(user)
    client = httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Bearer {plaintext}"}, timeout=10
    )
    client.recipient = recipient
    yield client
    client.close()


def test_real_http_matrix(http):
    response = http.get("/api/v1/balance")
    assert response.status_code == 200
    assert response.json() == {"balance_msat": 50_000, "pending_msat": 0}

    cases = [
        ("POST", "/api/test/transfer", b'{"amount_msat": ', "malformed_json", 400),
        ("POST", "/api/test/transfer", b'{"to": "x", "amount_msat": 1.5}', "validation_error", 400),
        ("POST", "/api/test/transfer", b'{"amount_msat": 1, "extra": 1}', "validation_error", 400),
        ("GET", "/api/v1/nothing-here", b"", "not_found", 404),
        ("DELETE", "/api/v1/balance", b"", "method_not_allowed", 405),
    ]
    for method, path, body, code, status in cases:
        response = http.request(
            method, path, content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == status, (path, response.text)
        assert response.headers["content-type"] == "application/json"
        assert error_of(response)["code"] == code

    anonymous = httpx.get(http.base_url.join("/api/v1/balance"))
    assert anonymous.status_code == 401
    assert error_of(anonymous)["code"] == "authentication_required"

    body = {"to": str(http.recipient.uuid), "amount_msat": 20_000}
    first = http.post("/api/test/transfer", json=body, headers={"Idempotency-Key": "k-1"})
    again = http.post("/api/test/transfer", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json() == again.json()
    assert http.get("/api/v1/balance").json()["balance_msat"] == 30_000
