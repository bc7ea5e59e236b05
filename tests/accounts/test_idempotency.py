"""Idempotency-Key on money-moving POSTs: run once, replay the stored response, refuse a
different body, and run once under concurrent replays (real threads, PostgreSQL)."""

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import IdempotencyRecord, IdempotencyState
from ledger.selectors import user_balance_msat
from tests.accounts import testviews
from tests.accounts.conftest import error_of

pytestmark = pytest.mark.urls("tests.accounts.urls")
TRANSFER = "/api/test/transfer"


@pytest.fixture
def payer(db, api, make_user, fund):
    fund(api.user, 100_000)
    api.recipient = make_user()
    return api


def send(client, amount=1000, key="key-1", **extra):
    body = {"to": str(client.recipient.uuid), "amount_msat": amount}
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(TRANSFER, body, format="json", **headers, **extra)


def test_replay_returns_the_stored_response_and_runs_nothing(payer):
    first = send(payer)
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first
    second = send(payer)
    assert second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert testviews.executions["count"] == 1
    assert user_balance_msat(user=payer.user) == 99_000
    record = IdempotencyRecord.objects.get(user=payer.user, key="key-1")
    assert record.state == IdempotencyState.COMPLETED and record.response_status == 201


def test_same_key_same_body_in_another_key_order_is_a_replay(payer):
    assert send(payer).status_code == 201
    raw = '{"amount_msat": 1000, "to": "%s"}' % payer.recipient.uuid  # noqa: UP031
    again = payer.post(TRANSFER, raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY="key-1")
    assert again["Idempotent-Replayed"] == "true"
    assert testviews.executions["count"] == 1


def test_same_key_different_body_is_a_conflict(payer):
    assert send(payer, amount=1000).status_code == 201
    response = send(payer, amount=2000)
    assert response.status_code == 409
    assert error_of(response)["code"] == "idempotency_conflict"
    assert testviews.executions["count"] == 1
    assert user_balance_msat(user=payer.user) == 99_000


def test_same_key_other_path_is_a_conflict(payer):
    assert send(payer).status_code == 201
    response = payer.post(
        "/api/test/idem-raise/insufficient", {}, format="json", HTTP_IDEMPOTENCY_KEY="key-1"
    )
    assert response.status_code == 409
    assert error_of(response)["code"] == "idempotency_conflict"


def test_keys_are_per_user(payer, make_user, issue_key, fund):
    assert send(payer).status_code == 201
    other = make_user()
    fund(other, 5000)
    _, plaintext = issue_key(other)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    client.recipient = payer.recipient
    response = send(client)
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response
    assert testviews.executions["count"] == 2


def test_without_key_every_request_runs(payer):
    assert send(payer, key=None).status_code == 201
    assert send(payer, key=None).status_code == 201
    assert testviews.executions["count"] == 2
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.parametrize("key", ["", "has space", "x" * 201, "é"])
def test_invalid_key(payer, key):
    response = payer.post(
        TRANSFER,
        {"to": str(payer.recipient.uuid), "amount_msat": 1},
        format="json",
        HTTP_IDEMPOTENCY_KEY=key.encode().decode("latin-1"),
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "validation_error"
    assert testviews.executions["count"] == 0


def test_a_4xx_outcome_is_stored_and_replayed(payer):
    first = send(payer, amount=1_000_000)  # more than the balance
    assert first.status_code == 409
    assert error_of(first)["code"] == "insufficient_balance"
    again = send(payer, amount=1_000_000)
    assert again.status_code == 409 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert testviews.executions["count"] == 1


def test_a_5xx_outcome_releases_the_key(payer):
    url = "/api/test/idem-raise/node_down"
    first = payer.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="k5")
    assert first.status_code == 503
    assert not IdempotencyRecord.objects.filter(key="k5").exists()
    second = payer.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="k5")
    assert second.status_code == 503
    assert "Idempotent-Replayed" not in second
    assert testviews.executions["count"] == 2


def test_still_in_progress_after_the_wait(payer, settings):
    settings.IDEMPOTENCY_WAIT_S = 0
    IdempotencyRecord.objects.create(
        user=payer.user,
        key="busy",
        method="POST",
        path=TRANSFER,
        request_hash=_hash_of(payer, 1000),
    )
    response = send(payer, key="busy")
    assert response.status_code == 409
    assert error_of(response)["code"] == "idempotency_in_progress"
    assert response["Retry-After"] == "1"
    assert testviews.executions["count"] == 0


def test_missing_scope_or_auth_creates_no_record(payer, issue_key):
    _, read_only = issue_key(payer.user, scopes=["read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {read_only}")
    client.recipient = payer.recipient
    assert send(client).status_code == 403
    assert not IdempotencyRecord.objects.exists()


def _hash_of(client, amount):
    import hashlib
    import json

    body = {"amount_msat": amount, "to": str(client.recipient.uuid)}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- concurrency ------------------------------------------------------------------------


@pytest.mark.postgres_only
def test_concurrent_replays_run_the_operation_once(
    live_server, committed_db, make_user, issue_key, fund
):
    """Eight clients send the same request with the same key at the same moment, over real
    HTTP, while the first one is still running (the view sleeps after posting): the transfer
    happens once; everyone gets its response, all but one marked as replayed."""
    payer, recipient = make_user(), make_user()
    fund(payer, 100_000)
    _, plaintext = issue_key(payer)
    testviews.pause["seconds"] = 0.5
    body = {"to": str(recipient.uuid), "amount_msat": 7000}
    barrier = threading.Barrier(8)

    def one(_):
        with httpx.Client(base_url=live_server.url, timeout=30) as client:
            barrier.wait()
            return client.post(
                TRANSFER,
                json=body,
                headers={"Authorization": f"Bearer {plaintext}", "Idempotency-Key": "same"},
            )

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(one, range(8)))

    assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
    assert len({r.text for r in responses}) == 1
    replayed = [r.headers.get("Idempotent-Replayed") for r in responses]
    assert replayed.count("true") == 7
    assert testviews.executions["count"] == 1
    assert user_balance_msat(user=payer) == 93_000
    assert user_balance_msat(user=recipient) == 7000


@pytest.mark.postgres_only
def test_concurrent_duplicates_get_in_progress_when_the_wait_is_short(
    live_server, committed_db, make_user, issue_key, fund, settings
):
    settings.IDEMPOTENCY_WAIT_S = 0
    payer, recipient = make_user(), make_user()
    fund(payer, 100_000)
    _, plaintext = issue_key(payer)
    testviews.pause["seconds"] = 1.0
    body = {"to": str(recipient.uuid), "amount_msat": 5000}
    barrier = threading.Barrier(4)

    def one(_):
        with httpx.Client(base_url=live_server.url, timeout=30) as client:
            barrier.wait()
            return client.post(
                TRANSFER,
                json=body,
                headers={"Authorization": f"Bearer {plaintext}", "Idempotency-Key": "k"},
            )

    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(one, range(4)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409, 409, 409], [r.text for r in responses]
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {
        "idempotency_in_progress"
    }
    assert testviews.executions["count"] == 1
    assert user_balance_msat(user=payer) == 95_000
    assert connection.vendor == "postgresql"
