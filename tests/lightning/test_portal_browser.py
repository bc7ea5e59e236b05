"""The portal's money pages in a real browser (Debian's Chromium via Playwright): create a
deposit invoice with its QR code, an outside payer pays it, the page shows it settled; then
withdraw to an outside invoice and see the payment listed."""

import os
from pathlib import Path

import pytest
from django.db import connections

from ledger.selectors import user_balance_msat
from lightning.models import Payment, PaymentStatus
from lightning.services import invoices_poll_open
from tests.accounts.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing")


def test_deposit_then_withdraw_in_the_portal(
    live_server, committed_db, make_user, world, tmp_path, monkeypatch
):
    # Playwright's sync API keeps an event loop in this thread; the ORM calls made here
    # between page actions run in the same single thread, so Django's guard can be lifted.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    user = make_user("walker")
    screenshots = Path(os.environ.get("SATLEDGER_SCREENSHOT_DIR", tmp_path))
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.set_default_timeout(15_000)
            page.goto(f"{live_server.url}/login/")
            page.fill("#id_username", "walker")
            page.fill("#id_password", "pw-walker")
            page.click("button[type=submit]")
            page.wait_for_url("**/dashboard/")

            page.click("text=Deposit")
            page.wait_for_url("**/deposit/")
            page.fill("#id_amount_sat", "2100")
            page.fill("#id_memo", "first deposit")
            page.click("text=Create invoice")
            page.wait_for_selector("[data-testid=bolt11]")
            assert page.locator(".qr svg").count() == 1
            bolt11 = page.text_content("[data-testid=bolt11]").strip()
            assert bolt11.startswith("lnbcrt21u")
            page.screenshot(path=str(screenshots / "deposit-invoice.png"), full_page=True)

            world.pay(bolt11)
            invoices_poll_open()
            page.reload()
            assert page.get_attribute("[data-testid=deposit-invoice]", "data-status") == "settled"
            assert user_balance_msat(user=user) == 2_100_000

            page.goto(f"{live_server.url}/withdraw/")
            page.fill("#id_bolt11", world.invoice(1_000_000))
            page.click("button:has-text('Pay')")
            page.wait_for_selector("text=Paid 1000000 msat")
            page.screenshot(path=str(screenshots / "withdraw.png"), full_page=True)
        finally:
            browser.close()
            # ORM calls made while Playwright's event loop runs in this thread get their own
            # connection, which pytest-django's teardown does not see: close it here.
            connections.close_all()
    payment = Payment.objects.get(user=user)
    assert payment.status == PaymentStatus.SUCCEEDED
    assert user_balance_msat(user=user) == 1_100_000 - payment.fee_msat
