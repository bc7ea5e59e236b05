import pytest

from ledger import services as ledger
from ledger.selectors import account_balance_msat, user_balance_msat
from lightning.nodes import NoNodeAvailable
from onchain import services
from onchain.models import DepositAddress, OnchainDeposit


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.ONCHAIN_DEPOSIT_CONFIRMATIONS = 3


def test_address_reused_until_used(make_user, use_wallet):
    user, other = make_user(), make_user()
    first = services.deposit_address_get(user=user)
    assert services.deposit_address_get(user=user).pk == first.pk
    assert services.deposit_address_get(user=other).address != first.address
    use_wallet.receive(address=first.address, amount_sat=50_000)
    services.deposits_scan()
    fresh = services.deposit_address_get(user=user)
    assert fresh.address != first.address
    assert DepositAddress.objects.get(pk=first.pk).used_at is not None


def test_no_node_no_address(make_user, use_wallet, node):
    node.enabled = False
    node.save()
    with pytest.raises(NoNodeAvailable):
        services.deposit_address_get(user=make_user())


def test_unreachable_node_gives_no_address(make_user, use_wallet):
    use_wallet.unreachable = True
    with pytest.raises(NoNodeAvailable):
        services.deposit_address_get(user=make_user())


def test_deposit_pending_then_credited_once(make_user, use_wallet, ledger_ok):
    user = make_user()
    address = services.deposit_address_get(user=user).address
    txid = use_wallet.receive(address=address, amount_sat=50_000, extra_outputs=2)
    report = services.deposits_scan()
    deposit = OnchainDeposit.objects.get()
    assert (report.seen, report.pending, report.credited) == (1, 1, 0)
    assert (deposit.txid, deposit.vout, deposit.status) == (txid, 2, "pending")
    assert user_balance_msat(user=user) == 0
    use_wallet.mine(2)
    services.deposits_scan()
    deposit.refresh_from_db()
    assert (deposit.confirmations, deposit.status) == (2, "pending")
    use_wallet.mine(1)
    assert services.deposits_scan().credited == 1
    deposit.refresh_from_db()
    assert deposit.status == "credited" and deposit.journal.idempotency_key == (
        f"onchain-deposit:{txid}:2"
    )
    assert user_balance_msat(user=user) == 50_000_000
    use_wallet.mine(5)
    assert services.deposits_scan().credited == 0
    assert user_balance_msat(user=user) == 50_000_000
    node_account = ledger.node_asset_account_get_or_create(node_name="chain", rail="onchain")
    assert account_balance_msat(account=node_account) == 50_000_000
    ledger_ok()


def test_two_outputs_to_one_address_are_two_deposits(make_user, use_wallet, ledger_ok):
    user = make_user()
    address = services.deposit_address_get(user=user).address
    use_wallet.receive(address=address, amount_sat=1_000)
    use_wallet.receive(address=address, amount_sat=2_000)
    use_wallet.mine(3)
    services.deposits_scan()
    assert user_balance_msat(user=user) == 3_000_000
    assert OnchainDeposit.objects.filter(status="credited").count() == 2
    ledger_ok()


def test_unknown_addresses_are_ignored(make_user, use_wallet, address):
    use_wallet.receive(address=address(), amount_sat=1_000)
    services.deposit_address_get(user=make_user())
    use_wallet.mine(3)
    assert services.deposits_scan().seen == 0


def test_dropped_deposit_is_marked_and_revived(make_user, use_wallet, ledger_ok):
    user = make_user()
    address = services.deposit_address_get(user=user).address
    txid = use_wallet.receive(address=address, amount_sat=7_000)
    services.deposits_scan()
    tx = use_wallet.txs[txid]
    use_wallet.drop(txid)
    assert services.deposits_scan().dropped == 1
    assert OnchainDeposit.objects.get().status == "dropped"
    use_wallet.txs[txid] = tx
    use_wallet.order.append(txid)
    use_wallet.mine(3)
    services.deposits_scan()
    assert OnchainDeposit.objects.get().status == "credited"
    assert user_balance_msat(user=user) == 7_000_000
    ledger_ok()


def test_withdrawal_to_a_users_deposit_address(
    funded_user, make_user, use_wallet, ledger_ok, settings
):
    """User A withdraws to user B's deposit address: A is debited at broadcast, B credited
    after confirmations, and the node's on-chain asset only loses the fee."""
    settings.ONCHAIN_BATCH_MIN_OUTPUTS = 1
    payer, payee = funded_user(100_000_000), make_user()
    address = services.deposit_address_get(user=payee).address
    node_account = ledger.node_asset_account_get_or_create(node_name="chain", rail="onchain")
    before = account_balance_msat(account=node_account)
    services.withdrawal_request(user=payer, address=address, amount_sat=30_000)
    services.batch_round()
    use_wallet.mine(3)
    services.deposits_scan()
    services.batch_round()
    assert user_balance_msat(user=payee) == 30_000_000
    fee = (150 + 31) * 1000
    assert user_balance_msat(user=payer) == 100_000_000 - 30_000_000 - fee
    assert before - account_balance_msat(account=node_account) == fee
    ledger_ok()
