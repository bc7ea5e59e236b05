import pytest
from django.test import Client

from ledger.selectors import user_balance_msat
from onchain import services
from onchain.models import Batch, OnchainWithdrawal
from tests.onchain.wallet import random_address


@pytest.fixture
def staff(make_user):
    client = Client()
    client.force_login(make_user(is_staff=True, is_superuser=True))
    return client


def test_run_now_pause_resume_and_pages(staff, funded_user, use_wallet, settings):
    settings.ONCHAIN_BATCH_MIN_OUTPUTS = 50  # run now ignores it
    services.withdrawal_request(
        user=funded_user(100_000_000), address=random_address(), amount_sat=5_000
    )
    assert staff.get("/admin/onchain/batch/run-now/").status_code == 405
    response = staff.post("/admin/onchain/batch/pause/", {"reason": "fee spike"})
    assert response.status_code == 302 and services.control_get().paused
    page = staff.get("/admin/onchain/batch/")
    assert b"Resume batching" in page.content and b"fee spike" in page.content
    assert staff.post("/admin/onchain/batch/run-now/").status_code == 302
    batch = Batch.objects.get()
    assert batch.status == "broadcast" and len(use_wallet.sends) == 1
    staff.post("/admin/onchain/batch/resume/")
    assert not services.control_get().paused
    detail = staff.get(f"/admin/onchain/batch/{batch.pk}/change/")
    assert detail.status_code == 200 and batch.txid.encode() in detail.content
    assert staff.get("/admin/onchain/onchainwithdrawal/").status_code == 200


def test_non_staff_cannot_control(make_user, client):
    client.force_login(make_user(is_staff=True))  # staff without the permission
    assert client.post("/admin/onchain/batch/pause/").status_code == 403
    assert not services.control_get().paused


def test_cancel_action_refunds_queued(staff, funded_user, ledger_ok):
    user = funded_user(100_000_000)
    withdrawal = services.withdrawal_request(user=user, address=random_address(), amount_sat=5_000)
    response = staff.post(
        "/admin/onchain/onchainwithdrawal/",
        {"action": "cancel_withdrawals", "_selected_action": [withdrawal.pk]},
    )
    assert response.status_code == 302
    assert OnchainWithdrawal.objects.get().status == "canceled"
    assert user_balance_msat(user=user) == 100_000_000
    ledger_ok()
