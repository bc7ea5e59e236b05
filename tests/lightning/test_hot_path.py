"""The hot paths stay lean: a deposit and an internal payment through the API run a bounded
number of queries (bench/RESULTS.md: each round trip costs CPU on both sides), and the
hand-written SQL behind them (config.sqlrows) gives exactly what the ORM would."""

import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from accounts.models import ApiKey
from accounts.selectors import api_key_for_plaintext, withdrawal_allowance
from accounts.services import api_key_issue
from config.sqlrows import ModelSql, code_literals
from ledger import services as ledger
from lightning.api import (
    DepositSerializer,
    WithdrawalSerializer,
    _deposit_data,
    _withdrawal_data,
)
from lightning.models import LIVE_PAYMENT_STATUSES, Invoice, Payment, PaymentStatus
from lightning.payments import withdrawal_create
from lightning.selectors import withdrawal_facts
from lightning.services import deposit_create, invoices_poll_open

# Counted on either database inside the test's transaction, where atomic blocks are savepoints
# (not counted). On PostgreSQL an internal payment is then 4 round trips: the API key, the
# withdrawal facts, the cancel on the payee's node, and one statement for all the writes.
DEPOSIT_MAX_QUERIES = 5
# SQLite runs the writes as separate statements in a transaction (the count against the
# daily limit: two).
INTERNAL_PAYMENT_MAX_QUERIES = {"postgresql": 4, "sqlite": 11}


def _statements(context: CaptureQueriesContext) -> list[str]:
    # Savepoint bookkeeping stands in for BEGIN/COMMIT in tests: not counted.
    return [
        query["sql"]
        for query in context.captured_queries
        if not query["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))
    ]


@pytest.fixture
def api(make_user, alpha):
    def make():
        user = make_user()
        _, plaintext = api_key_issue(user=user, name="t", scopes=["read", "receive", "send"])
        return user, {"HTTP_AUTHORIZATION": f"Bearer {plaintext}", "HTTP_HOST": "localhost"}

    return make


def _post(client: Client, path: str, body: dict, headers: dict):
    return client.post(path, json.dumps(body), content_type="application/json", **headers)


def test_deposit_and_internal_payment_query_budget(api, world):
    payer, payer_headers = api()
    payee, payee_headers = api()
    client = Client()
    funding = _post(client, "/api/v1/deposits", {"amount_msat": 50_000}, payer_headers)
    world.pay(funding.json()["bolt11"])
    invoices_poll_open()
    client.get("/api/v1/balance", **payee_headers)  # a key's first use records it (once a minute)

    with CaptureQueriesContext(connection) as deposit_queries:
        created = _post(client, "/api/v1/deposits", {"amount_msat": 7_000}, payee_headers)
    assert created.status_code == 201, created.content
    assert len(_statements(deposit_queries)) <= DEPOSIT_MAX_QUERIES, _statements(deposit_queries)

    with CaptureQueriesContext(connection) as payment_queries:
        paid = _post(
            client, "/api/v1/withdrawals", {"bolt11": created.json()["bolt11"]}, payer_headers
        )
    assert paid.status_code == 201, paid.content
    assert paid.json()["internal"] is True and paid.json()["status"] == "succeeded"
    budget = INTERNAL_PAYMENT_MAX_QUERIES[connection.vendor]
    assert len(_statements(payment_queries)) <= budget, _statements(payment_queries)
    assert ledger.user_account_get_or_create(user=payee).balance_msat == 7_000
    assert ledger.user_account_get_or_create(user=payer).balance_msat == 43_000


def _field_values(instance) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in instance._meta.fields}


def test_api_key_lookup_matches_the_orm(make_user):
    user = make_user()
    _, plaintext = api_key_issue(user=user, name="k", scopes=["read", "send"])
    found = api_key_for_plaintext(plaintext)
    orm = ApiKey.objects.select_related("user").get(pk=found.pk)
    assert _field_values(found) == _field_values(orm)
    assert _field_values(found.user) == _field_values(orm.user)
    assert found.scopes == ["read", "send"] and found.user.uuid == user.uuid
    assert found._state.adding is False and found.user._state.adding is False
    assert api_key_for_plaintext(plaintext[:-1] + ("a" if plaintext[-1] != "a" else "b")) is None


def test_model_sql_insert_matches_the_orm(make_user, alpha):
    user = make_user()
    rows = ModelSql(Payment, "p")
    inserted = rows.insert(
        Payment(
            user=user,
            payment_hash="ab" * 32,
            bolt11="lnbcrt1test",
            amount_msat=1_234,
            fee_msat=0,
            internal=True,
            status=PaymentStatus.SUCCEEDED,
            resolved_at=timezone.now(),
        )
    )
    assert inserted.pk is not None and inserted._state.adding is False
    reloaded = Payment.objects.get(pk=inserted.pk)
    assert _field_values(reloaded) == _field_values(inserted)
    assert reloaded.created_at is not None  # auto_now_add applied, as save() would
    assert [_field_values(p) for p in rows.where("p.user_id = %s", [user.pk])] == [
        _field_values(reloaded)
    ]


def test_model_sql_only_reads_the_named_columns_and_defers_the_rest(make_user, alpha):
    user = make_user()
    invoice = deposit_create(user=user, amount_msat=5_000)
    rows = ModelSql(Invoice, "i", only=["payment_hash", "status"])
    assert [field.attname for field in rows.fields] == ["id", "payment_hash", "status"]
    (slim,) = rows.where("i.id = %s", [invoice.pk])
    assert (
        slim.get_deferred_fields()
        == Invoice.objects.only("payment_hash", "status").get(pk=invoice.pk).get_deferred_fields()
    )
    assert (slim.pk, slim.payment_hash, slim.status) == (invoice.pk, invoice.payment_hash, "open")
    with pytest.raises(ValueError):
        ModelSql(Invoice, "i", only=["payment_hash", "no_such_column"])


def test_withdrawal_facts(api, world):
    user, headers = api()
    payer, _ = api()
    created = _post(Client(), "/api/v1/deposits", {"amount_msat": 5_000}, headers).json()
    facts = withdrawal_facts(user=payer, payment_hash=created["payment_hash"])
    assert facts.paid_before is False
    assert _field_values(facts.ours) == _field_values(
        Invoice.objects.get(payment_hash=created["payment_hash"])
    )
    assert facts.ours.node.name == "alpha" and facts.ours.user == user
    assert facts.payer_account == ledger.user_account_get_or_create(user=payer)
    assert _field_values(facts.payee_account) == _field_values(
        ledger.user_account_get_or_create(user=user)
    )
    assert facts.allowance == withdrawal_allowance(user=payer)

    unknown = withdrawal_facts(user=payer, payment_hash="cd" * 32)
    assert (unknown.ours, unknown.payee_account, unknown.paid_before) == (None, None, False)
    Payment.objects.create(
        user=user,
        payment_hash="cd" * 32,
        bolt11="lnbcrt1x",
        amount_msat=1,
        status=PaymentStatus.PENDING,
    )
    assert withdrawal_facts(user=payer, payment_hash="cd" * 32).paid_before is True


def test_code_literals_quote_only_our_status_codes():
    assert code_literals(LIVE_PAYMENT_STATUSES) == "'pending', 'succeeded'"
    for bad in ["x' OR '1'='1", "Pending", "", "a;b"]:
        with pytest.raises(ValueError):
            code_literals(["pending", bad])


def test_rendered_dicts_are_what_the_documented_serializers_give(make_user, world):
    """The API renders deposits and withdrawals from dicts (a serializer per response cost
    ~0.2 ms); the serializers document the shapes in the OpenAPI schema. Same bytes."""
    payer, payee = make_user(), make_user()
    funding = deposit_create(user=payer, amount_msat=50_000, memo="funding")
    open_invoice = deposit_create(user=payee, amount_msat=5_000, memo="")
    world.pay(funding.bolt11)
    invoices_poll_open()
    funding.refresh_from_db()
    internal = withdrawal_create(user=payer, bolt11=open_invoice.bolt11)
    open_invoice.refresh_from_db()
    world.fail_next()
    failed = withdrawal_create(user=payer, bolt11=world.invoice(1_000), max_fee_msat=100)
    render = JSONRenderer().render
    for invoice in (funding, open_invoice, deposit_create(user=payee, amount_msat=None)):
        assert render(_deposit_data(invoice)) == render(DepositSerializer(invoice).data)
    for payment in (internal, failed):
        data = _withdrawal_data(payment)
        assert render(data) == render(WithdrawalSerializer(data).data)
    assert failed.status == PaymentStatus.FAILED and internal.internal
