"""Triggers that tell every web process to forget its cached API keys (accounts/keycache.py):
`NOTIFY satledger_api_keys` on any change authentication reads. Not on a key's `last_used_at`
nor a user's `last_login` (written by use and by logins, they would empty the caches all the
time); every other column counts, including ones added later (the rows are compared whole,
as JSON, without those two). PostgreSQL only: SQLite has no notifications and no cache."""

from django.db import migrations

from accounts.keycache import CHANNEL

INSTALL = f"""
CREATE OR REPLACE FUNCTION accounts_api_keys_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END $$;

CREATE TRIGGER accounts_apikey_changed AFTER UPDATE ON accounts_apikey FOR EACH ROW
    WHEN ((to_jsonb(OLD) - 'last_used_at') IS DISTINCT FROM (to_jsonb(NEW) - 'last_used_at'))
    EXECUTE FUNCTION accounts_api_keys_changed();
CREATE TRIGGER accounts_apikey_deleted AFTER DELETE OR TRUNCATE ON accounts_apikey
    FOR EACH STATEMENT EXECUTE FUNCTION accounts_api_keys_changed();
CREATE TRIGGER accounts_user_changed AFTER UPDATE ON accounts_user FOR EACH ROW
    WHEN ((to_jsonb(OLD) - 'last_login') IS DISTINCT FROM (to_jsonb(NEW) - 'last_login'))
    EXECUTE FUNCTION accounts_api_keys_changed();
CREATE TRIGGER accounts_user_deleted AFTER DELETE OR TRUNCATE ON accounts_user
    FOR EACH STATEMENT EXECUTE FUNCTION accounts_api_keys_changed();
"""

UNINSTALL = """
DROP TRIGGER IF EXISTS accounts_user_deleted ON accounts_user;
DROP TRIGGER IF EXISTS accounts_user_changed ON accounts_user;
DROP TRIGGER IF EXISTS accounts_apikey_deleted ON accounts_apikey;
DROP TRIGGER IF EXISTS accounts_apikey_changed ON accounts_apikey;
DROP FUNCTION IF EXISTS accounts_api_keys_changed();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(INSTALL, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNINSTALL, params=None)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0003_withdrawal_window")]
    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
