"""GET /api/v1/account, /balance, /transactions and the OpenAPI schema/docs."""

import pytest
from rest_framework.test import APIClient

from accounts.services import user_limits_set
from ledger import services as ledger
from ledger.selectors import user_pending_msat
from lightning.models import Node, Payment, PaymentStatus

pytestmark = pytest.mark.django_db


def test_account(api, fund):
    fund(api.user, 12_345)
    user_limits_set(user=api.user, max_withdrawal_msat=9_000, daily_withdrawal_msat=None)
    body = api.get("/api/v1/account").json()
    assert body["uuid"] == str(api.user.uuid)
    assert body["username"] == api.user.username
    assert body["balance_msat"] == 12_345
    assert body["limits"]["max_withdrawal_msat"] == 9_000
    assert body["limits"]["daily_withdrawal_msat"] == 50_000_000_000
    assert body["limits"]["daily_withdrawn_msat"] == 0
    assert "id" not in body  # the integer pk never leaves the service


def test_balance_with_pending_withdrawal(api, fund):
    fund(api.user, 10_000)
    in_flight = ledger.system_account_get_or_create(code=ledger.WITHDRAWALS_IN_FLIGHT)
    ledger.pending_transfer_reserve(
        key="withdrawal:999",
        kind="withdrawal_reserve",
        debit=ledger.user_account_get_or_create(user=api.user),
        holding=in_flight,
        amount_msat=3_000,
    )
    body = api.get("/api/v1/balance").json()
    assert body == {"balance_msat": 7_000, "pending_msat": 3_000}
    assert user_pending_msat(user=api.user) == 3_000


def test_transactions_keyset_pagination(api, fund, make_user):
    fund(api.user, 100_000)
    other = make_user()
    mine = ledger.user_account_get_or_create(user=api.user)
    theirs = ledger.user_account_get_or_create(user=other)
    for n in range(5):
        ledger.transfer(
            idempotency_key=f"t{n}",
            kind="internal_payment",
            debit=mine,
            credit=theirs,
            amount_msat=1000 + n,
            memo=f"pay {n}",
        )
    first = api.get("/api/v1/transactions?limit=4").json()
    assert [row["memo"] for row in first["results"]] == ["pay 4", "pay 3", "pay 2", "pay 1"]
    row = first["results"][0]
    assert set(row) == {
        "id",
        "kind",
        "amount_msat",
        "fee_msat",
        "balance_after_msat",
        "reference",
        "memo",
        "created_at",
    }
    assert row["amount_msat"] == -1004 and row["fee_msat"] is None
    assert row["balance_after_msat"] == 100_000 - sum(1000 + n for n in range(5))
    assert row["reference"] is None
    assert first["next_cursor"] is not None
    # a new movement does not shift the next page
    ledger.transfer(
        idempotency_key="late",
        kind="internal_payment",
        debit=mine,
        credit=theirs,
        amount_msat=1,
    )
    second = api.get(f"/api/v1/transactions?limit=4&before={first['next_cursor']}").json()
    assert [row["memo"] for row in second["results"]] == ["pay 0", "test deposit"]
    assert second["results"][1]["reference"] == {"type": "test", "id": "1"}
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=201", "limit=abc", "before=-1", "before=x", "limit=1.5"]
)
def test_transactions_bad_query(api, query):
    response = api.get(f"/api/v1/transactions?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


@pytest.mark.parametrize(("node_fee", "refund"), [(700, False), (120, True)])
def test_fee_shown_on_the_withdrawal(api, fund, node_fee, refund):
    """A withdrawal's row (kind withdrawal_reserve, key withdrawal:<id>) carries the fee the
    user paid once it succeeded: the node's fee up to the reserve."""
    fund(api.user, 100_000)
    node = Node.objects.create(name="n1", kind="fake", connection="type=fake")
    payment = Payment.objects.create(
        user=api.user,
        node=node,
        payment_hash="ab" * 32,
        bolt11="lnbcrt1",
        amount_msat=10_000,
        fee_reserve_msat=500,
    )
    ledger.pending_transfer_reserve(
        key=f"withdrawal:{payment.pk}",
        kind="withdrawal_reserve",
        debit=ledger.user_account_get_or_create(user=api.user),
        holding=ledger.system_account_get_or_create(code=ledger.WITHDRAWALS_IN_FLIGHT),
        amount_msat=10_500,
    )
    pending = api.get("/api/v1/transactions").json()["results"][0]
    assert (pending["kind"], pending["fee_msat"]) == ("withdrawal_reserve", None)

    charged = min(node_fee, 500)
    ledger.pending_transfer_post(
        key=f"withdrawal:{payment.pk}",
        kind="withdrawal_settle",
        destinations=[(ledger.node_asset_account_get_or_create(node_name="n1"), 10_000 + charged)],
    )
    Payment.objects.filter(pk=payment.pk).update(status=PaymentStatus.SUCCEEDED, fee_msat=node_fee)
    rows = api.get("/api/v1/transactions").json()["results"]
    kinds = [(r["kind"], r["amount_msat"], r["fee_msat"]) for r in rows[:-1]]
    expected = [("withdrawal_reserve", -10_500, charged)]
    if refund:
        expected.insert(0, ("withdrawal_settle", 500 - charged, None))
    assert kinds == expected
    assert api.get("/api/v1/balance").json()["balance_msat"] == 100_000 - 10_000 - charged


def test_transactions_query_count_is_constant(api, fund, django_assert_max_num_queries):
    fund(api.user, 1000)
    with django_assert_max_num_queries(6):
        assert api.get("/api/v1/transactions?limit=200").status_code == 200


def test_schema_and_docs_are_served_without_a_cdn(db):
    client = APIClient()
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in ("/api/v1/account", "/api/v1/balance", "/api/v1/transactions"):
        assert path in text
    assert "bearer" in text
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()
