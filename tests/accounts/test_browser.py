"""The portal in a real browser: Debian's Chromium driven by Playwright against the live
server. Log in, see the balance, create an API key (shown once), revoke it."""

import os
from pathlib import Path

import pytest

from accounts.models import ApiKey
from accounts.selectors import api_key_for_plaintext

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"{CHROMIUM} is missing: apt-get install -y chromium",
)


def test_login_balance_create_and_revoke_key(live_server, committed_db, make_user, fund, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    user = make_user("browser")
    fund(user, 21_000_500)
    screenshot_dir = Path(os.environ.get("SATLEDGER_SCREENSHOT_DIR", tmp_path))

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.set_default_timeout(15_000)
            page.goto(f"{live_server.url}/")
            assert "/login/" in page.url
            page.fill("#id_username", "browser")
            page.fill("#id_password", "pw-browser")
            page.click("button[type=submit]")
            page.wait_for_url("**/dashboard/")
            assert page.text_content("[data-testid=balance-sat]").split()[0] == "21,000.5"
            assert "21,000,500 msat" in page.text_content("[data-testid=balance-msat]")
            assert "test deposit" in page.content()
            page.screenshot(path=str(screenshot_dir / "dashboard.png"), full_page=True)

            page.click("text=API keys")
            page.wait_for_url("**/keys/")
            page.fill("#id_name", "my wallet")
            page.check("input[value=send]")
            page.click("text=Create key")
            plaintext = page.text_content("[data-testid=new-key-value]").strip()
            assert plaintext.startswith("sl_")
            page.screenshot(path=str(screenshot_dir / "api-key-created.png"), full_page=True)

            page.goto(f"{live_server.url}/keys/")  # any later visit: the key is not shown again
            assert plaintext not in page.content()
            row = page.locator("[data-testid=key-row]", has_text="my wallet")
            assert "active" in row.text_content()
            row.get_by_role("button", name="Revoke").click()
            page.wait_for_selector("text=is revoked")
            row = page.locator("[data-testid=key-row]", has_text="my wallet")
            assert "revoked" in row.text_content()
            assert row.get_by_role("button", name="Revoke").count() == 0
        finally:
            browser.close()

    key = api_key_for_plaintext(plaintext)
    assert key is not None and key.user == user and key.scopes == ["read", "send"]
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
