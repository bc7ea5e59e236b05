import pytest
from rest_framework.test import APIClient

from accounts.api.throttling import limiter
from accounts.services import api_key_issue
from ledger import services as ledger
from tests.accounts import testviews


@pytest.fixture(autouse=True)
def _fresh_state():
    """Rate-limit state lives in the process: start each test with none."""
    limiter.clear()
    testviews.executions["count"] = 0
    testviews.pause["seconds"] = 0.0
    yield
    limiter.clear()


@pytest.fixture
def fund():
    def fund(user, amount_msat: int):
        node = ledger.node_asset_account_get_or_create(node_name="testnode")
        ledger.transfer(
            idempotency_key=f"test-deposit:{user.uuid}:{amount_msat}",
            kind="deposit",
            debit=node,
            credit=ledger.user_account_get_or_create(user=user),
            amount_msat=amount_msat,
            memo="test deposit",
            reference=("test", "1"),
        )

    return fund


@pytest.fixture
def issue_key():
    def issue(user, scopes=("read", "receive", "send"), name="test"):
        return api_key_issue(user=user, name=name, scopes=scopes)

    return issue


@pytest.fixture
def api(make_user, issue_key):
    """An APIClient authenticated with a full-scope key of a fresh user."""
    user = make_user()
    key, plaintext = issue_key(user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    client.user = user
    client.key = key
    client.plaintext = plaintext
    return client


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]
