"""API keys (services, selectors, command, admin) and per-user limits."""

import hashlib
import io
from datetime import timedelta

import pytest
from django.contrib.admin.sites import AdminSite
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from accounts.admin import ApiKeyAdmin
from accounts.models import ApiKey, User
from accounts.selectors import api_key_for_plaintext, limits_for
from accounts.services import (
    AccountsError,
    api_key_issue,
    api_key_revoke,
    api_key_touch,
    user_create,
    user_limits_set,
)
from ledger.selectors import user_account, user_balance_msat

pytestmark = pytest.mark.django_db


def test_issue_key_format_and_storage(make_user):
    user = make_user()
    key, plaintext = api_key_issue(user=user, name="wallet", scopes=["send", "read", "read"])
    assert plaintext.startswith(f"sl_{key.prefix}_")
    assert len(key.prefix) == 8
    assert key.scopes == ["read", "send"]  # deduplicated, canonical order
    assert key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    stored = ApiKey.objects.filter(pk=key.pk).values()[0]
    assert plaintext not in str(stored)
    assert api_key_for_plaintext(plaintext) == key
    assert api_key_for_plaintext(plaintext + "x") is None
    assert api_key_for_plaintext("sl_" + key.prefix) is None


def test_keys_are_unique(make_user):
    user = make_user()
    texts = {api_key_issue(user=user, name="k", scopes=["read"])[1] for _ in range(20)}
    assert len(texts) == 20


@pytest.mark.parametrize(("name", "scopes"), [("k", []), ("k", ["admin"]), ("", ["read"])])
def test_issue_refuses_bad_input(make_user, name, scopes):
    with pytest.raises(AccountsError):
        api_key_issue(user=make_user(), name=name, scopes=scopes)


def test_revoke_is_idempotent(make_user):
    key, _ = api_key_issue(user=make_user(), name="k", scopes=["read"])
    first = api_key_revoke(api_key=key).revoked_at
    assert first is not None
    assert api_key_revoke(api_key=key).revoked_at == first


def test_last_used_is_written_at_most_once_a_minute(make_user, django_assert_num_queries):
    key, _ = api_key_issue(user=make_user(), name="k", scopes=["read"])
    api_key_touch(api_key=key)
    first = key.last_used_at
    assert first is not None
    with django_assert_num_queries(0):
        api_key_touch(api_key=key)
    stale = ApiKey.objects.get(pk=key.pk)  # another process's copy, same recent value
    with django_assert_num_queries(0):
        api_key_touch(api_key=stale)
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=first - timedelta(minutes=2))
    key.refresh_from_db()
    api_key_touch(api_key=key)
    assert ApiKey.objects.get(pk=key.pk).last_used_at > first - timedelta(seconds=1)


def test_user_create_gives_a_ledger_account(db):
    user = user_create(username="carol", email="c@example.invalid")
    assert not user.has_usable_password()
    assert user_balance_msat(user=user) == 0
    assert user_account(user=user).owner == user
    with pytest.raises(AccountsError):
        user_create(username="carol")


def run_command(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("issue_api_key", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_issue_api_key_command_prints_the_key_last(make_user):
    user = make_user("dave")
    out, err = run_command("dave", "--scopes", "read,receive,send", "--name", "ci")
    last = out.strip().splitlines()[-1]
    key = api_key_for_plaintext(last)
    assert key is not None and key.user == user
    assert key.name == "ci" and key.scopes == ["read", "receive", "send"]
    assert last not in err


def test_issue_api_key_command_creates_user_on_request(db):
    out, _ = run_command("erin", "--scopes", "read", "--create-user")
    assert api_key_for_plaintext(out.strip().splitlines()[-1]).user.username == "erin"
    assert User.objects.filter(username="erin").exists()


def test_issue_api_key_command_unknown_user(db):
    with pytest.raises(CommandError, match="--create-user"):
        run_command("nobody", "--scopes", "read")
    assert not User.objects.filter(username="nobody").exists()


def test_issue_api_key_command_bad_scope(make_user):
    make_user("frank")
    with pytest.raises(CommandError, match="Unknown scope"):
        run_command("frank", "--scopes", "read,root")


def test_issue_api_key_command_exit_status(make_user, tmp_path):
    """Through the real command line: unknown user exits non-zero with a clear message."""
    from django.core.management import ManagementUtility

    utility = ManagementUtility(["manage.py", "issue_api_key", "ghost", "--scopes", "read"])
    with pytest.raises(SystemExit) as exit_info:
        utility.execute()
    assert exit_info.value.code != 0


def test_admin_never_shows_the_hash(make_user, admin_user):
    key, plaintext = api_key_issue(user=make_user(), name="k", scopes=["read"])
    admin = ApiKeyAdmin(ApiKey, AdminSite())
    assert "key_hash" not in admin.fields
    client = Client()
    client.force_login(admin_user)
    page = client.get(f"/admin/accounts/apikey/{key.pk}/change/").content.decode()
    assert key.prefix in page
    assert key.key_hash not in page and plaintext not in page
    listing = client.get("/admin/accounts/apikey/").content.decode()
    assert key.key_hash not in listing


def test_admin_revoke_action(make_user, admin_user):
    key, _ = api_key_issue(user=make_user(), name="k", scopes=["read"])
    client = Client()
    client.force_login(admin_user)
    response = client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke_keys", "_selected_action": [key.pk]},
        follow=True,
    )
    assert response.status_code == 200
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_limits_fall_back_to_settings(make_user, settings):
    settings.WITHDRAWAL_MAX_MSAT = 111
    settings.WITHDRAWAL_DAILY_MAX_MSAT = 222
    user = make_user()
    assert limits_for(user) == limits_for(user=user)
    assert (limits_for(user).max_withdrawal_msat, limits_for(user).daily_withdrawal_msat) == (
        111,
        222,
    )
    user_limits_set(user=user, max_withdrawal_msat=5, daily_withdrawal_msat=None)
    assert (limits_for(user).max_withdrawal_msat, limits_for(user).daily_withdrawal_msat) == (
        5,
        222,
    )
    user_limits_set(user=user, max_withdrawal_msat=None, daily_withdrawal_msat=0)
    assert (limits_for(user).max_withdrawal_msat, limits_for(user).daily_withdrawal_msat) == (
        111,
        0,
    )
    with pytest.raises(AccountsError):
        user_limits_set(user=user, max_withdrawal_msat=-1, daily_withdrawal_msat=None)
