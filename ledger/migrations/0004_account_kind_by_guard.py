"""An account's kind is checked by the account guard on insert instead of by a CHECK, which
PostgreSQL re-read on each of the two balance updates of every payment (kind cannot change
after insert: the guard refuses it). On PostgreSQL the guards are reinstalled first, so that
kinds are never unchecked. On SQLite, dropping the constraint rebuilds the table: the guards
are dropped before and installed after (the same, backwards)."""

from django.db import migrations

from ledger import db_guards


def before_rebuild(apps, schema_editor):
    """PostgreSQL: the guards with the kind check, before the CHECK goes. SQLite: no guards
    while ledger_account is rebuilt (its rename fails while the posting triggers name it)."""
    db_guards.uninstall(schema_editor)
    if schema_editor.connection.vendor != "sqlite":
        db_guards.install(schema_editor)


def after_rebuild(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        db_guards.install(schema_editor)


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0003_lean_indexes"),
    ]

    operations = [
        migrations.RunPython(before_rebuild, after_rebuild, elidable=False),
        migrations.RemoveConstraint(
            model_name="account",
            name="ledger_account_kind_valid",
        ),
        migrations.RunPython(after_rebuild, before_rebuild, elidable=False),
    ]
