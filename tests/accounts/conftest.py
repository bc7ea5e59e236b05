import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from accounts.services import api_key_issue
from ledger import db_guards
from ledger import services as ledger
from tests.accounts import testviews


@pytest.fixture(autouse=True)
def _fresh_state():
    """Rate-limit counters live in the cache and ids repeat across tests: start clean."""
    cache.clear()
    testviews.executions["count"] = 0
    testviews.pause["seconds"] = 0.0
    yield
    cache.clear()


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


@pytest.fixture
def committed_db(transactional_db):
    """transactional_db whose teardown also works on SQLite after journals were posted: the
    flush between transactional tests DELETEs every row, which the ledger's append-only
    triggers refuse on SQLite (PostgreSQL's flush TRUNCATEs). So drop the guards, flush,
    and put them back."""
    yield
    if connection.vendor != "sqlite":
        return
    with connection.schema_editor() as editor:
        db_guards.uninstall(editor)
    try:
        call_command("flush", interactive=False, verbosity=0)
    finally:
        with connection.schema_editor() as editor:
            db_guards.install(editor)
