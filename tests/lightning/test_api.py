"""The REST API's money endpoints over real HTTP (a live server, httpx), with the simulated
node: deposits, withdrawals, internal payments, bad input, scopes, idempotent replays."""

import hashlib
import secrets
import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from django.db import connection

from accounts.services import api_key_issue
from ledger.checks import run_checks
from ledger.models import Journal
from ledger.selectors import user_balance_msat
from lightning.backends.base import Network
from lightning.invoices import sign_bolt11
from lightning.models import Invoice, Payment
from lightning.payments import payments_track_pending
from lightning.services import invoices_poll_open

pytestmark = pytest.mark.usefixtures("committed_db")


class Client:
    def __init__(self, base_url: str, user, plaintext: str) -> None:
        self.user = user
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {plaintext}"}, timeout=30
        )

    def get(self, path: str) -> httpx.Response:
        return self.http.get(f"/api/v1{path}")

    def post(
        self, path: str, body=None, *, raw: str | None = None, key: str | None = None
    ) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else {}
        if raw is not None:
            headers["Content-Type"] = "application/json"
            return self.http.post(f"/api/v1{path}", content=raw, headers=headers)
        return self.http.post(f"/api/v1{path}", json=body, headers=headers)


@pytest.fixture
def client_for(live_server, make_user):
    clients = []

    def make(scopes=("read", "receive", "send")) -> Client:
        user = make_user()
        _, plaintext = api_key_issue(user=user, name="test", scopes=list(scopes))
        client = Client(live_server.url, user, plaintext)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.http.close()


def deposit_and_pay(client: Client, world, amount_msat: int) -> dict:
    created = client.post("/deposits", {"amount_msat": amount_msat, "memo": "top up"})
    assert created.status_code == 201, created.text
    world.pay(created.json()["bolt11"])
    invoices_poll_open()
    return created.json()


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]["code"]


@pytest.fixture(autouse=True)
def _ledger_sound_after(committed_db):
    yield
    report = run_checks()
    assert report.ok, report.violations


def test_deposit_withdraw_and_internal_payment_end_to_end(client_for, world):
    alice, bob = client_for(), client_for()
    deposit = deposit_and_pay(alice, world, 500_000)
    assert set(deposit) >= {"payment_hash", "bolt11", "amount_msat", "expires_at", "status"}
    assert deposit["status"] == "open" and deposit["amount_msat"] == 500_000
    detail = alice.get(f"/deposits/{deposit['payment_hash']}").json()
    assert detail["status"] == "settled" and detail["amount_received_msat"] == 500_000
    assert detail["settled_at"]
    assert alice.get("/balance").json() == {"balance_msat": 500_000, "pending_msat": 0}

    # To the outside world, with a fee limit: succeeded, fee within it, rest refunded.
    paid = alice.post("/withdrawals", {"bolt11": world.invoice(100_000), "max_fee_msat": 3_000})
    assert paid.status_code == 201, paid.text
    body = paid.json()
    assert body["status"] == "succeeded" and 0 <= body["fee_msat"] <= 3_000
    assert hashlib.sha256(bytes.fromhex(body["preimage"])).hexdigest() == body["payment_hash"]
    assert alice.get(f"/withdrawals/{body['id']}").json()["status"] == "succeeded"
    after_withdrawal = 500_000 - 100_000 - body["fee_msat"]
    assert alice.get("/balance").json()["balance_msat"] == after_withdrawal

    # Internally to Bob: one journal, no node, no fee.
    bob_invoice = bob.post("/deposits", {"amount_msat": 40_000}).json()
    internal = alice.post("/withdrawals", {"bolt11": bob_invoice["bolt11"]})
    assert internal.status_code == 201, internal.text
    assert internal.json()["status"] == "succeeded" and internal.json()["fee_msat"] == 0
    assert bob.get("/balance").json()["balance_msat"] == 40_000
    assert bob.get(f"/deposits/{bob_invoice['payment_hash']}").json()["status"] == "settled"
    assert alice.get("/balance").json()["balance_msat"] == after_withdrawal - 40_000

    rows = alice.get("/transactions?limit=10").json()["results"]
    # Newest first: internal payment, withdrawal (reserve, then settle), deposit.
    assert [row["kind"] for row in rows] == [
        "internal_payment",
        "withdrawal_settle",
        "withdrawal_reserve",
        "deposit",
    ]
    assert rows[0]["amount_msat"] == -40_000
    assert rows[0]["balance_after_msat"] == after_withdrawal - 40_000
    assert rows[-1]["amount_msat"] == 500_000 and rows[-1]["balance_after_msat"] == 500_000


def test_failed_withdrawal_is_refunded(client_for, world):
    alice = client_for()
    deposit_and_pay(alice, world, 200_000)
    world.fail_next("no_route")
    failed = alice.post("/withdrawals", {"bolt11": world.invoice(50_000)})
    assert failed.status_code == 201
    assert failed.json()["status"] == "failed" and failed.json()["failure_reason"]
    assert alice.get("/balance").json() == {"balance_msat": 200_000, "pending_msat": 0}


def test_hung_withdrawal_is_202_pending_then_settled_by_the_tracker(client_for, world, settings):
    settings.LIGHTNING_PAY_TIMEOUT_S = 0.3
    alice = client_for()
    deposit_and_pay(alice, world, 200_000)
    world.hang_next()
    pending = alice.post("/withdrawals", {"bolt11": world.invoice(50_000), "max_fee_msat": 2_000})
    assert pending.status_code == 202
    assert pending.json()["status"] == "pending"
    assert alice.get("/balance").json() == {"balance_msat": 148_000, "pending_msat": 52_000}
    world.resolve(succeed=True)
    payments_track_pending()
    final = alice.get(f"/withdrawals/{pending.json()['id']}").json()
    assert final["status"] == "succeeded"
    assert alice.get("/balance").json()["balance_msat"] == 150_000 - final["fee_msat"]


def expired_invoice() -> str:
    preimage = secrets.token_bytes(32)
    return sign_bolt11(
        private_key=secrets.token_bytes(32),
        network=Network.REGTEST,
        payment_hash=hashlib.sha256(preimage).hexdigest(),
        payment_secret=secrets.token_hex(32),
        amount_msat=10_000,
        expiry_s=60,
        description="expired",
        created_at=datetime.now(UTC) - timedelta(hours=2),
    )


def mainnet_invoice() -> str:
    return sign_bolt11(
        private_key=secrets.token_bytes(32),
        network=Network.MAINNET,
        payment_hash=secrets.token_hex(32),
        payment_secret=secrets.token_hex(32),
        amount_msat=10_000,
        expiry_s=3600,
        description="mainnet",
    )


BAD_WITHDRAWALS = [
    ({"bolt11": "garbage"}, 400, "invalid_invoice"),
    ({"bolt11": ""}, 400, "validation_error"),
    ({"bolt11": "lnbcrt1" + "q" * 200}, 400, "invalid_invoice"),
    ({"amount_msat": 5}, 400, "validation_error"),
    ({"bolt11": "OUTSIDE", "amount_msat": 0}, 400, "validation_error"),
    ({"bolt11": "OUTSIDE", "amount_msat": -1}, 400, "validation_error"),
    ({"bolt11": "OUTSIDE", "amount_msat": 2**70}, 400, "validation_error"),
    ({"bolt11": "OUTSIDE", "amount_msat": 1.5}, 400, "validation_error"),
    ({"bolt11": "OUTSIDE", "amount_msat": "1000"}, 400, "validation_error"),
    ({"bolt11": "OUTSIDE", "max_fee_msat": -5}, 400, "validation_error"),
    ({"bolt11": "OUTSIDE", "surprise": True}, 400, "validation_error"),
    ({"bolt11": "AMOUNTLESS"}, 400, "amount_required"),
    ({"bolt11": "OUTSIDE", "amount_msat": 1_234}, 400, "amount_mismatch"),
    ({"bolt11": "EXPIRED"}, 400, "invoice_expired"),
    ({"bolt11": "MAINNET"}, 400, "wrong_network"),
    ({"bolt11": "TOO_BIG"}, 409, "insufficient_balance"),
    ({"bolt11": "OWN"}, 400, "own_invoice"),
    # another user's deposit invoice re-signed by someone else for 1 msat (would underpay it)
    ({"bolt11": "FORGED"}, 400, "invalid_invoice"),
]


def test_bad_withdrawals_get_a_clear_4xx_and_change_nothing(client_for, world):
    alice = client_for()
    deposit_and_pay(alice, world, 100_000)
    own = alice.post("/deposits", {"amount_msat": 1_000}).json()["bolt11"]
    theirs = client_for().post("/deposits", {"amount_msat": 50_000}).json()
    substitutes = {
        "OUTSIDE": world.invoice(10_000),
        "AMOUNTLESS": world.invoice(None),
        "EXPIRED": expired_invoice(),
        "MAINNET": mainnet_invoice(),
        "TOO_BIG": world.invoice(5_000_000),
        "OWN": own,
        "FORGED": sign_bolt11(
            private_key=secrets.token_bytes(32),
            network=Network.REGTEST,
            payment_hash=theirs["payment_hash"],
            payment_secret=secrets.token_hex(32),
            amount_msat=1,
            expiry_s=3600,
            description="forged",
        ),
    }
    journals = Journal.objects.count()
    for body, status, code in BAD_WITHDRAWALS:
        request = {
            key: substitutes.get(value, value) if key == "bolt11" else value
            for key, value in body.items()
        }
        response = alice.post("/withdrawals", request)
        assert (response.status_code, error_code(response)) == (status, code), (body, response.text)
    for raw in ["{not json", "[]", "null", '"string"', '{"bolt11": }']:
        response = alice.post("/withdrawals", raw=raw)
        assert response.status_code == 400, (raw, response.text)
        assert error_code(response) in {"malformed_json", "validation_error"}
    assert Journal.objects.count() == journals
    assert not Payment.objects.filter(user=alice.user).exists()
    assert alice.get("/balance").json() == {"balance_msat": 100_000, "pending_msat": 0}
    assert Invoice.objects.get(payment_hash=theirs["payment_hash"]).status == "open"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"amount_msat": 0}, "validation_error"),
        ({"amount_msat": -100}, "validation_error"),
        ({"amount_msat": 10.5}, "validation_error"),
        ({"amount_msat": 2**64}, "validation_error"),
        ({"amount_msat": 1000, "memo": "x" * 501}, "validation_error"),
        ({"amount_msat": 1000, "extra": 1}, "validation_error"),
    ],
)
def test_bad_deposits(client_for, world, body, code):
    alice = client_for()
    response = alice.post("/deposits", body)
    assert response.status_code == 400 and error_code(response) == code


def test_amountless_deposit_is_allowed(client_for, world):
    alice = client_for()
    created = alice.post("/deposits", {"amount_msat": None})
    assert created.status_code == 201 and created.json()["amount_msat"] is None
    world.pay(created.json()["bolt11"], amount_msat=7_777)
    invoices_poll_open()
    assert alice.get("/balance").json()["balance_msat"] == 7_777


def test_scopes_are_enforced_and_nothing_happens(client_for, world):
    reader, receiver = client_for(scopes=("read",)), client_for(scopes=("receive",))
    refused = reader.post("/deposits", {"amount_msat": 1_000})
    assert refused.status_code == 403 and error_code(refused) == "scope_required"
    refused = receiver.post("/withdrawals", {"bolt11": world.invoice(1_000)})
    assert refused.status_code == 403 and error_code(refused) == "scope_required"
    assert receiver.post("/deposits", {"amount_msat": 1_000}).status_code == 201
    assert receiver.get("/balance").status_code == 403
    assert not Payment.objects.exists()


def test_users_see_only_their_own_objects(client_for, world):
    alice, mallory = client_for(), client_for()
    deposit = deposit_and_pay(alice, world, 100_000)
    paid = alice.post("/withdrawals", {"bolt11": world.invoice(1_000)}).json()
    for path in (f"/deposits/{deposit['payment_hash']}", f"/withdrawals/{paid['id']}"):
        response = mallory.get(path)
        assert response.status_code == 404 and error_code(response) == "not_found"


def test_node_down_is_503(client_for, world):
    alice = client_for()
    world.down()
    response = alice.post("/deposits", {"amount_msat": 1_000})
    assert response.status_code == 503 and error_code(response) == "node_unavailable"


@pytest.mark.postgres_only
def test_concurrent_replays_of_one_withdrawal_pay_once(client_for, world):
    alice = client_for()
    deposit_and_pay(alice, world, 300_000)
    bolt11 = world.invoice(100_000)
    barrier = threading.Barrier(10)
    results: list[tuple[int, str]] = []

    def replay() -> None:
        try:
            with httpx.Client(
                base_url=alice.http.base_url, headers=alice.http.headers, timeout=30
            ) as http:
                barrier.wait()
                response = http.post(
                    "/api/v1/withdrawals",
                    json={"bolt11": bolt11},
                    headers={"Idempotency-Key": "pay-coffee-1"},
                )
            results.append((response.status_code, response.text))
        finally:
            connection.close()

    threads = [threading.Thread(target=replay) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Payment.objects.filter(user=alice.user).count() == 1
    ok = [text for status, text in results if status in (201, 202)]
    assert ok, results
    assert all(status in (201, 202, 409) for status, _ in results), results
    payment = Payment.objects.get(user=alice.user)
    assert user_balance_msat(user=alice.user) == 300_000 - 100_000 - payment.fee_msat
