"""Drop the journal and posting indexes that only cost writes: the LIKE index PostgreSQL gets
for a `unique=True` CharField (the key stays unique through a named constraint, created
before the old one goes, so there is no moment without it), the index on `kind` (only the
admin filters by it), and the single-column `account` index that ledger_posting_account_id
(account, -id) already covers. Rebuilds the journal's unique index: on a large ledger, run
it with the service stopped, like any migration here that touches an index.

On SQLite, altering a field rebuilds the table and loses its triggers: the guards are put
back at the end (PostgreSQL keeps them)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from ledger import db_guards


def reinstall_sqlite_guards(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        db_guards.uninstall(schema_editor)
        db_guards.install(schema_editor)


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0002_database_guards"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # Backwards, the rebuilds below come after this one: put the guards back last.
        migrations.RunPython(migrations.RunPython.noop, reinstall_sqlite_guards, elidable=False),
        migrations.AddConstraint(
            model_name="journal",
            constraint=models.UniqueConstraint(
                fields=("idempotency_key",), name="ledger_journal_idempotency_key_unique"
            ),
        ),
        migrations.AlterField(
            model_name="journal",
            name="idempotency_key",
            field=models.CharField(max_length=200),
        ),
        migrations.AlterField(
            model_name="journal",
            name="kind",
            field=models.CharField(max_length=64),
        ),
        migrations.AlterField(
            model_name="posting",
            name="account",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="postings",
                to="ledger.account",
            ),
        ),
        migrations.RunPython(reinstall_sqlite_guards, reinstall_sqlite_guards, elidable=False),
    ]
