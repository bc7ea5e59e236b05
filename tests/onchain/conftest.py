import pytest

from ledger import services as ledger
from ledger.checks import run_checks
from lightning.models import Node
from tests.onchain.wallet import MemoryWallet, random_address


@pytest.fixture
def wallet():
    return MemoryWallet()


@pytest.fixture
def node(db):
    return Node.objects.create(name="chain", kind="lnd", connection="type=lnd;server=x:1")


@pytest.fixture
def use_wallet(monkeypatch, wallet, node):
    """Every on-chain node call goes to the in-memory wallet."""
    monkeypatch.setattr("onchain.services.node_backend", lambda _node: wallet)
    return wallet


@pytest.fixture
def funded_user(make_user, node):
    def fund(amount_msat: int, user=None):
        user = user or make_user()
        ledger.transfer(
            idempotency_key=f"test-fund:{user.uuid}:{amount_msat}",
            kind="deposit",
            debit=ledger.node_asset_account_get_or_create(node_name="chain", rail="onchain"),
            credit=ledger.user_account_get_or_create(user=user),
            amount_msat=amount_msat,
        )
        return user

    return fund


@pytest.fixture
def address():
    return random_address


@pytest.fixture
def ledger_ok():
    def check():
        report = run_checks()
        assert report.ok, report.violations

    return check
