import uuid

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from accounts.services import api_key_issue
from ledger.selectors import user_balance_msat
from onchain import services
from onchain.models import OnchainWithdrawal
from tests.onchain.wallet import random_address

URL = "/api/v1/onchain/withdrawals"


@pytest.fixture(autouse=True)
def _clean_cache(settings):
    settings.ONCHAIN_BATCH_MIN_OUTPUTS = 1
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def client_for():
    def make(user, scopes=("read", "receive", "send")):
        _, plaintext = api_key_issue(user=user, name="t", scopes=scopes)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
        return client

    return make


def post(client, body, key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key or uuid.uuid4().hex}
    return client.post(URL, body, format="json", **headers)


def error(response):
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    return body["error"]


def test_withdraw_then_follow_it(funded_user, client_for, use_wallet, ledger_ok):
    user = funded_user(100_000_000)
    client = client_for(user)
    address = random_address()
    response = post(client, {"address": address, "amount_sat": 25_000})
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["amount_sat"] == 25_000
    assert body["txid"] is None and body["fee_msat"] is None and body["confirmations"] == 0

    services.batch_round()
    use_wallet.mine(2)
    services.batch_round()
    got = client.get(f"{URL}/{body['id']}").json()
    assert got["status"] == "broadcast" and got["confirmations"] == 2
    assert got["txid"] == use_wallet.order[0] and got["fee_msat"] == (150 + 31) * 1000
    assert client.get(URL).json()["results"][0]["id"] == body["id"]
    ledger_ok()


def test_other_users_withdrawal_is_404(funded_user, client_for):
    owner = funded_user(100_000_000)
    response = post(client_for(owner), {"address": random_address(), "amount_sat": 5_000})
    other = client_for(funded_user(1_000))
    missing = other.get(f"{URL}/{response.json()['id']}")
    assert missing.status_code == 404 and error(missing)["code"] == "not_found"
    assert other.get(f"{URL}/{uuid.uuid4()}").status_code == 404


def test_idempotency_key_replays(funded_user, client_for):
    user = funded_user(100_000_000)
    client = client_for(user)
    body = {"address": random_address(), "amount_sat": 5_000}
    first = post(client, body, key="same")
    again = post(client, body, key="same")
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert OnchainWithdrawal.objects.count() == 1
    conflict = post(client, {**body, "amount_sat": 6_000}, key="same")
    assert conflict.status_code == 409 and error(conflict)["code"] == "idempotency_conflict"


def test_key_is_required(funded_user, client_for):
    client = client_for(funded_user(100_000_000))
    response = client.post(URL, {"address": random_address(), "amount_sat": 5_000}, format="json")
    assert response.status_code == 400 and error(response)["code"] == "validation_error"


def test_scopes(funded_user, client_for):
    reader = client_for(funded_user(100_000_000), scopes=("read",))
    response = post(reader, {"address": random_address(), "amount_sat": 5_000})
    assert response.status_code == 403 and error(response)["code"] == "scope_required"
    assert reader.get(URL).status_code == 200
    sender = client_for(funded_user(100_000_000), scopes=("send",))
    assert sender.get(URL).status_code == 403
    receive = client_for(funded_user(1_000), scopes=("read",)).post(
        "/api/v1/onchain/deposit-address"
    )
    assert receive.status_code == 403


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (
            {"address": "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", "amount_sat": 5_000},
            400,
            "wrong_network",
        ),
        ({"address": "not an address", "amount_sat": 5_000}, 400, "invalid_address"),
        ({"address": "", "amount_sat": 5_000}, 400, "invalid_address"),
        ({"address": "bcrt1" + "q" * 120, "amount_sat": 5_000}, 400, "invalid_address"),
        ({"address": "RANDOM", "amount_sat": 545}, 400, "amount_too_small"),
        ({"address": "RANDOM", "amount_sat": 5_000.0}, 400, "validation_error"),
        ({"address": "RANDOM", "amount_sat": "5000"}, 400, "validation_error"),
        ({"address": "RANDOM", "amount_sat": True}, 400, "validation_error"),
        ({"address": "RANDOM", "amount_sat": 0}, 400, "validation_error"),
        ({"address": "RANDOM"}, 400, "validation_error"),
        ({"address": "RANDOM", "amount_sat": 5_000, "fee": 1}, 400, "validation_error"),
        ({"address": "RANDOM", "amount_sat": 99_000}, 409, "insufficient_balance"),
        ({"address": "RANDOM", "amount_sat": 200_000}, 403, "limit_exceeded"),
    ],
)
def test_bad_requests_change_nothing(funded_user, client_for, settings, body, status, code):
    settings.WITHDRAWAL_MAX_MSAT = 150_000_000
    user = funded_user(100_000_000)
    if body.get("address") == "RANDOM":
        body = {**body, "address": random_address()}
    response = post(client_for(user), body)
    assert response.status_code == status, response.content
    assert error(response)["code"] == code
    assert not OnchainWithdrawal.objects.exists()
    assert user_balance_msat(user=user) == 100_000_000


def test_deposit_address_and_deposits(make_user, client_for, use_wallet, settings, ledger_ok):
    settings.ONCHAIN_DEPOSIT_CONFIRMATIONS = 2
    user = make_user()
    client = client_for(user)
    first = client.post("/api/v1/onchain/deposit-address")
    assert first.status_code == 200
    address = first.json()["address"]
    assert client.post("/api/v1/onchain/deposit-address").json()["address"] == address
    use_wallet.receive(address=address, amount_sat=12_345)
    services.deposits_scan()
    listed = client.get("/api/v1/onchain/deposits").json()["results"]
    assert [(d["status"], d["amount_sat"], d["confirmations"]) for d in listed] == [
        ("pending", 12_345, 0)
    ]
    assert listed[0]["confirmations_required"] == 2
    assert client.post("/api/v1/onchain/deposit-address").json()["address"] != address
    use_wallet.mine(2)
    services.deposits_scan()
    assert client.get("/api/v1/onchain/deposits").json()["results"][0]["status"] == "credited"
    assert user_balance_msat(user=user) == 12_345_000
    ledger_ok()


def test_deposit_address_node_down_is_503(make_user, client_for, use_wallet):
    use_wallet.unreachable = True
    response = client_for(make_user()).post("/api/v1/onchain/deposit-address")
    assert response.status_code == 503 and error(response)["code"] == "node_unavailable"
