"""The web portal through Django's test client, and the QR helper."""

import pytest
from django.template import Context, Template

from accounts.models import ApiKey
from accounts.qr import lightning_qr_svg, qr_svg
from accounts.selectors import api_key_for_plaintext
from accounts.services import api_key_issue
from accounts.templatetags.satledger import sat

pytestmark = pytest.mark.django_db


@pytest.fixture
def portal(client, make_user, fund):
    user = make_user("pat")
    fund(user, 1_234_567)
    client.force_login(user)
    client.user = user
    return client


def test_root_redirects(client, portal):
    assert portal.get("/").url == "/dashboard/"


def test_anonymous_goes_to_login(client):
    response = client.get("/dashboard/")
    assert response.status_code == 302 and response.url.startswith("/login/")
    assert client.get("/").url.startswith("/login/?next=/")


def test_login_page_and_login(client, make_user):
    make_user("quinn")
    assert client.get("/login/").status_code == 200
    response = client.post("/login/", {"username": "quinn", "password": "pw-quinn"})
    assert response.status_code == 302 and response.url == "/dashboard/"


def test_dashboard(portal):
    page = portal.get("/dashboard/").content.decode()
    assert "1,234.567" in page and "1,234,567 msat" in page
    assert "test deposit" in page
    assert 'id="money-actions"' in page


def test_dashboard_pagination_links(portal, fund, make_user):
    from ledger import services as ledger

    mine = ledger.user_account_get_or_create(user=portal.user)
    theirs = ledger.user_account_get_or_create(user=make_user())
    for n in range(25):
        ledger.transfer(
            idempotency_key=f"p{n}",
            kind="internal_payment",
            debit=mine,
            credit=theirs,
            amount_msat=1,
            memo=f"row {n}",
        )
    first = portal.get("/dashboard/")
    assert "Older" in first.content.decode()
    cursor = first.context["statement"].next_cursor
    second = portal.get(f"/dashboard/?before={cursor}").content.decode()
    assert "row 4" in second and "row 24" not in second and "Newest" in second
    assert portal.get("/dashboard/?before=junk").status_code == 200


def test_create_key_shows_it_once(portal):
    response = portal.post("/keys/", {"name": "phone", "scopes": ["read", "send"]})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    plaintext = response.context["new_key"].plaintext
    assert plaintext in response.content.decode()
    assert api_key_for_plaintext(plaintext).scopes == ["read", "send"]
    listing = portal.get("/keys/").content.decode()
    assert plaintext not in listing
    assert "phone" in listing


def test_create_key_needs_a_scope(portal):
    response = portal.post("/keys/", {"name": "x"})
    assert response.status_code == 200 and response.context["new_key"] is None
    assert not ApiKey.objects.exists()


def test_revoke_own_key_only(portal, make_user):
    mine, _ = api_key_issue(user=portal.user, name="mine", scopes=["read"])
    theirs, _ = api_key_issue(user=make_user(), name="theirs", scopes=["read"])
    assert portal.get(f"/keys/{mine.pk}/revoke/").status_code == 405
    assert portal.post(f"/keys/{theirs.pk}/revoke/").status_code == 404
    response = portal.post(f"/keys/{mine.pk}/revoke/", follow=True)
    assert "is revoked" in response.content.decode()
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.revoked_at is not None and theirs.revoked_at is None


def test_logout(portal):
    response = portal.post("/logout/")
    assert response.status_code == 302
    assert portal.get("/dashboard/").status_code == 302


def test_sat_filter_uses_integers():
    assert sat(12_345_678) == "12,345.678"
    assert sat(5000) == "5"
    assert sat(1) == "0.001"
    assert sat(-1500) == "-1.5"
    assert sat(10**21 + 1) == "1,000,000,000,000,000,000.001"


def test_qr_helpers_render_inline_svg():
    svg = qr_svg("hello")
    assert svg.startswith("<svg") and "</svg>" in svg
    bolt11 = "lnbcrt10u1pjexample"
    rendered = Template("{% load satledger %}{{ b|lightning_qr }}").render(Context({"b": bolt11}))
    assert rendered.startswith("<svg")
    assert lightning_qr_svg(bolt11) == rendered
    assert "LNBCRT" not in rendered  # drawn as modules, not embedded as text
