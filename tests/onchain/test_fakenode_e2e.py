"""End to end with the simulated node (`type=fake`, lightning/backends/fake.py): requests,
batch, fee split, recovery after a crash, confirmations and deposits, all through the real
backend and its database state."""

import pytest

from ledger import services as ledger
from ledger.selectors import account_balance_msat, user_balance_msat
from lightning.fakenode import services as fakenode
from lightning.fakenode.models import FakeTransaction
from lightning.nodes import forget_backends, node_add
from onchain import services
from onchain.models import Batch, OnchainDeposit, OnchainWithdrawal


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.ONCHAIN_BATCH_MIN_OUTPUTS = 1
    settings.ONCHAIN_CONFIRMATIONS = 2
    settings.ONCHAIN_DEPOSIT_CONFIRMATIONS = 2
    forget_backends()
    yield
    forget_backends()


@pytest.fixture
def fake_node(db):
    return node_add(name="sim", connection="type=fake;onchain_sat=100000000")


@pytest.fixture
def outside_address():
    """Addresses of another simulated wallet: valid regtest addresses nobody here owns."""
    fakenode.node_ensure(name="elsewhere")
    return lambda: fakenode.address_new(node_name="elsewhere", network="regtest")


def fund(user, amount_msat):
    ledger.transfer(
        idempotency_key=f"e2e-fund:{user.uuid}",
        kind="deposit",
        debit=ledger.node_asset_account_get_or_create(node_name="sim", rail="onchain"),
        credit=ledger.user_account_get_or_create(user=user),
        amount_msat=amount_msat,
    )


def test_withdrawals_batch_and_confirm(fake_node, make_user, outside_address, ledger_ok):
    users = [make_user() for _ in range(3)]
    for user in users:
        fund(user, 50_000_000)
    amounts = [10_000, 15_000, 20_000]
    for user, amount in zip(users, amounts, strict=True):
        services.withdrawal_request(user=user, address=outside_address(), amount_sat=amount)

    report = services.batch_round()

    [tx] = FakeTransaction.objects.filter(node__name="sim")
    batch = Batch.objects.get()
    assert report.sent == [batch.pk]
    assert (batch.txid, batch.fee_sat, batch.label) == (tx.txid, tx.fee_sat, tx.label)
    assert sorted(o.amount_sat for o in tx.outputs.all()) == amounts
    rows = list(OnchainWithdrawal.objects.order_by("id"))
    assert sum(w.fee_share_msat for w in rows) == tx.fee_sat * 1000
    for user, row in zip(users, rows, strict=True):
        assert user_balance_msat(user=user) == 50_000_000 - row.amount_msat - row.fee_msat

    fakenode.chain_mine(blocks=2)
    services.batch_round()
    batch.refresh_from_db()
    assert batch.status == "confirmed" and batch.confirmations >= 2
    assert {w.status for w in OnchainWithdrawal.objects.all()} == {"confirmed"}
    ledger_ok()


def test_crash_after_broadcast_recovers_without_a_second_transaction(
    fake_node, make_user, outside_address, monkeypatch, ledger_ok
):
    user = make_user()
    fund(user, 50_000_000)
    services.withdrawal_request(user=user, address=outside_address(), amount_sat=10_000)
    services.withdrawal_request(user=user, address=outside_address(), amount_sat=12_000)

    def die(**kwargs):
        raise KeyboardInterrupt("the worker process is killed right after send_many returned")

    with monkeypatch.context() as patch:
        patch.setattr(services, "batch_record_broadcast", die)
        with pytest.raises(KeyboardInterrupt):
            services.batch_round()
    assert FakeTransaction.objects.filter(node__name="sim").count() == 1
    assert Batch.objects.get().status == "created"

    forget_backends()  # a fresh worker
    report = services.batch_round()
    assert report.recovered == [Batch.objects.get().pk]
    assert FakeTransaction.objects.filter(node__name="sim").count() == 1
    batch = Batch.objects.get()
    assert batch.status == "broadcast" and batch.txid == FakeTransaction.objects.get().txid
    assert set(OnchainWithdrawal.objects.values_list("status", flat=True)) == {"broadcast"}
    ledger_ok()


def test_node_down_requeues_then_sends(fake_node, make_user, outside_address, ledger_ok):
    user = make_user()
    fund(user, 50_000_000)
    withdrawal = services.withdrawal_request(
        user=user, address=outside_address(), amount_sat=10_000
    )
    fakenode.node_set_down(name="sim", down=True)
    services.batch_round()
    withdrawal.refresh_from_db()
    assert withdrawal.status == "queued"
    fakenode.node_set_down(name="sim", down=False)
    services.batch_round()
    withdrawal.refresh_from_db()
    assert withdrawal.status == "broadcast"
    assert FakeTransaction.objects.filter(node__name="sim").count() == 1
    ledger_ok()


def test_node_without_funds_refuses_and_the_user_is_refunded(
    db, make_user, outside_address, settings, ledger_ok
):
    settings.ONCHAIN_MAX_ATTEMPTS = 1
    node_add(name="sim", connection="type=fake;onchain_sat=1000")
    user = make_user()
    fund(user, 50_000_000)
    withdrawal = services.withdrawal_request(
        user=user, address=outside_address(), amount_sat=10_000
    )
    report = services.batch_round()
    withdrawal.refresh_from_db()
    assert report.failed and withdrawal.status == "failed"
    assert user_balance_msat(user=user) == 50_000_000
    ledger_ok()


def test_deposit_to_the_simulated_node(fake_node, make_user, ledger_ok):
    user = make_user()
    address = services.deposit_address_get(user=user).address
    txid = fakenode.onchain_receive(address=address, amount_sat=40_000, network="regtest").txid
    services.deposits_scan()
    deposit = OnchainDeposit.objects.get()
    assert (deposit.txid, deposit.vout, deposit.status) == (txid, 0, "pending")
    fakenode.chain_mine(blocks=1)
    services.deposits_scan()
    assert OnchainDeposit.objects.get().status == "pending"
    fakenode.chain_mine(blocks=1)
    services.deposits_scan()
    services.deposits_scan()
    assert OnchainDeposit.objects.get().status == "credited"
    assert user_balance_msat(user=user) == 40_000_000
    node_account = ledger.node_asset_account_get_or_create(node_name="sim", rail="onchain")
    assert account_balance_msat(account=node_account) == 40_000_000
    ledger_ok()
