"""Install the triggers of ledger/db_guards.py. A later migration that rebuilds a ledger
table on SQLite (ALTER via table copy) drops its triggers: re-run `install` after it.
tests/ledger/test_db_guards.py fails if any guard is missing."""

from django.db import migrations

from ledger import db_guards


def forwards(apps, schema_editor):
    db_guards.install(schema_editor)


def backwards(apps, schema_editor):
    db_guards.uninstall(schema_editor)


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
