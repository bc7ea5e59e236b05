"""The staff admin: money rows are read-only, nodes show health and liquidity with their
connection string redacted, and staff can enable, disable and check nodes."""

import pytest
from django.urls import reverse

from ledger import services
from ledger.models import Account, Journal
from lightning.models import Node
from lightning.nodes import node_add


@pytest.fixture
def staff(client, make_user):
    user = make_user("staffer", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


@pytest.fixture
def some_money(make_user):
    user = make_user()
    services.transfer(
        idempotency_key="admin-test-deposit",
        kind="deposit",
        debit=services.node_asset_account_get_or_create(node_name="alpha"),
        credit=services.user_account_get_or_create(user=user),
        amount_msat=5_000,
    )
    return Journal.objects.get(idempotency_key="admin-test-deposit")


@pytest.mark.parametrize(
    "model",
    [
        "ledger.account",
        "ledger.journal",
        "ledger.pendingtransfer",
        "lightning.invoice",
        "lightning.payment",
    ],
)
def test_money_rows_are_listed_but_never_added(staff, some_money, model):
    app, name = model.split(".")
    assert staff.get(reverse(f"admin:{app}_{name}_changelist")).status_code == 200
    assert staff.get(reverse(f"admin:{app}_{name}_add")).status_code == 403


def test_a_journal_cannot_be_changed_or_deleted_through_the_admin(staff, some_money):
    change_url = reverse("admin:ledger_journal_change", args=[some_money.pk])
    page = staff.get(change_url)
    assert page.status_code == 200 and b"5000" in page.content  # postings shown inline
    staff.post(change_url, {"memo": "edited"})
    assert (
        staff.post(
            reverse("admin:ledger_journal_delete", args=[some_money.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    some_money.refresh_from_db()
    assert some_money.memo == ""
    account = Account.objects.get(code="node:alpha:lightning")
    assert (
        staff.post(
            reverse("admin:ledger_account_delete", args=[account.pk]), {"post": "yes"}
        ).status_code
        == 403
    )


def test_nodes_show_health_redacted_connection_and_actions(staff):
    node_add(name="alpha", connection="type=fake")
    node_add(name="bravo", connection="type=eclair;server=http://127.0.0.1:9;password=s3cret")
    changelist = reverse("admin:lightning_node_changelist")
    staff.post(
        changelist,
        {"action": "check_nodes", "_selected_action": [n.pk for n in Node.objects.all()]},
    )
    alpha, bravo = Node.objects.get(name="alpha"), Node.objects.get(name="bravo")
    assert alpha.healthy and alpha.block_height is not None and alpha.snapshots.exists()
    assert not bravo.healthy
    page = staff.get(reverse("admin:lightning_node_change", args=[bravo.pk])).content.decode()
    assert "password=***" in page and "s3cret" not in page
    listing = staff.get(changelist).content.decode()
    assert "s3cret" not in listing
    staff.post(changelist, {"action": "disable_nodes", "_selected_action": [alpha.pk]})
    assert not Node.objects.get(name="alpha").enabled
    staff.post(changelist, {"action": "enable_nodes", "_selected_action": [alpha.pk]})
    assert Node.objects.get(name="alpha").enabled


def test_a_users_page_shows_what_counts_against_the_daily_limit(staff, make_user, settings):
    from django.db import transaction

    from accounts.services import user_limits_set, withdrawal_window_count

    settings.WITHDRAWAL_MAX_MSAT = 9_000_000
    user = make_user()
    user_limits_set(user=user, max_withdrawal_msat=None, daily_withdrawal_msat=50_000_000)
    with transaction.atomic():
        withdrawal_window_count(user=user, amount_msat=1_234_000, daily_limit_msat=50_000_000)
    page = staff.get(reverse("admin:accounts_user_change", args=[user.pk]))
    assert page.status_code == 200
    assert "withdrawn in the last 24 hours" in page.content.decode().lower()
    assert (
        "1,234,000 msat of 50,000,000 msat a day (at most 9,000,000 msat at once)"
        in page.content.decode()
    )
    assert staff.get(reverse("admin:accounts_user_add")).status_code == 200
