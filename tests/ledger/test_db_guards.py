"""The database refuses what the service would never write: every guard proven with raw SQL."""

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from ledger import db_guards, selectors
from ledger.models import Account, Posting


def raw(sql: str, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def raw_journal(key: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO ledger_journal (idempotency_key, kind, memo, reference_type, reference_id, "
            "created_at) VALUES (%s, 'raw', '', '', '', CURRENT_TIMESTAMP) RETURNING id",
            [key],
        )
        return cursor.fetchone()[0]


def test_every_guard_trigger_is_installed(db):
    assert db_guards.expected_trigger_names(connection) <= db_guards.installed_trigger_names(
        connection
    )


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE ledger_posting SET amount_msat = amount_msat + 1",
        "DELETE FROM ledger_posting",
        "UPDATE ledger_journal SET memo = 'edited'",
        "DELETE FROM ledger_journal",
    ],
)
def test_postings_and_journals_are_append_only(funded, sql):
    funded(1_000)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        raw(sql)


def test_raw_posting_updates_cached_balance_and_running_balance_is_checked(funded, node_account):
    user, account = funded(1_000)
    with transaction.atomic():
        journal_id = raw_journal("raw-1")
        with pytest.raises(DatabaseError, match="running balance"), transaction.atomic():
            raw(
                "INSERT INTO ledger_posting (journal_id, account_id, amount_msat, balance_after_msat) "
                "VALUES (%s, %s, %s, %s)",
                [journal_id, account.pk, -100, 12345],
            )
        raw(
            "INSERT INTO ledger_posting (journal_id, account_id, amount_msat, balance_after_msat) "
            "VALUES (%s, %s, %s, %s), (%s, %s, %s, NULL)",
            [journal_id, account.pk, -100, 1_100, journal_id, node_account.pk, 100],
        )
    assert selectors.user_balance_msat(user=user) == 1_100


def test_raw_overdraft_hits_the_check_constraint(funded, node_account):
    _, account = funded(500)
    with pytest.raises(DatabaseError), transaction.atomic():
        journal_id = raw_journal("raw-2")
        raw(
            "INSERT INTO ledger_posting (journal_id, account_id, amount_msat, balance_after_msat) "
            "VALUES (%s, %s, %s, %s), (%s, %s, %s, NULL)",
            [journal_id, account.pk, 600, -100, journal_id, node_account.pk, -600],
        )


@pytest.mark.postgres_only
def test_unbalanced_raw_journal_rejected_at_commit(transactional_db, funded, node_account):
    _, account = funded(500)
    before = Posting.objects.count()
    with pytest.raises(DatabaseError, match="sum to"), transaction.atomic():
        raw(
            "INSERT INTO ledger_journal (idempotency_key, kind, memo, reference_type, reference_id, "
            "created_at) VALUES ('raw-3', 'raw', '', '', '', now())"
        )
        raw(
            "INSERT INTO ledger_posting (journal_id, account_id, amount_msat) "
            "SELECT id, %s, -50 FROM ledger_journal WHERE idempotency_key = 'raw-3' "
            "UNION ALL SELECT id, %s, 49 FROM ledger_journal WHERE idempotency_key = 'raw-3'",
            [account.pk, node_account.pk],
        )
    assert Posting.objects.count() == before


@pytest.mark.postgres_only
def test_journal_without_postings_rejected_at_commit(transactional_db):
    with pytest.raises(DatabaseError, match="at least two"), transaction.atomic():
        raw(
            "INSERT INTO ledger_journal (idempotency_key, kind, memo, reference_type, reference_id, "
            "created_at) VALUES ('raw-4', 'raw', '', '', '', now())"
        )


@pytest.mark.postgres_only
def test_direct_balance_update_refused(funded):
    _, account = funded(500)
    with pytest.raises(DatabaseError, match="only through postings"), transaction.atomic():
        raw("UPDATE ledger_account SET balance_msat = 1000000 WHERE id = %s", [account.pk])


def test_account_cannot_start_with_money(db):
    with pytest.raises(DatabaseError), transaction.atomic():
        raw(
            "INSERT INTO ledger_account (code, name, kind, allow_negative, cached, balance_msat, "
            "created_at) VALUES ('x', 'x', 'liability', %s, %s, 5, CURRENT_TIMESTAMP)",
            [False, True],
        )


def _insert_account(code: str, kind: str) -> None:
    raw(
        "INSERT INTO ledger_account (code, name, kind, allow_negative, cached, balance_msat, "
        "created_at) VALUES (%s, '', %s, %s, %s, 0, CURRENT_TIMESTAMP)",
        [code, kind, False, True],
    )


def test_an_account_kind_must_be_known(db):
    with pytest.raises(IntegrityError, match="not an account kind"), transaction.atomic():
        _insert_account("bad-kind", "savings")
    _insert_account("good-kind", "liability")
    # The kind cannot change afterwards (PostgreSQL: not at all; SQLite: not to an unknown one).
    with pytest.raises(DatabaseError), transaction.atomic():
        raw("UPDATE ledger_account SET kind = 'savings' WHERE code = 'good-kind'")
    assert Account.objects.get(code="good-kind").kind == "liability"


def test_the_kind_guard_survives_the_migration_both_ways(committed_db):
    """0004 moved the kind check from a CHECK into the guards: back to 0003 and forward again,
    a bad kind is refused at every step and every guard is in place at the end (on SQLite, the
    constraint's change rebuilds the table, which drops its triggers)."""
    executor = MigrationExecutor(connection)
    executor.migrate([("ledger", "0003_lean_indexes")])
    with pytest.raises(IntegrityError), transaction.atomic():
        _insert_account("bad-before", "savings")
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    with pytest.raises(IntegrityError, match="not an account kind"), transaction.atomic():
        _insert_account("bad-after", "savings")
    assert db_guards.expected_trigger_names(connection) <= db_guards.installed_trigger_names(
        connection
    )
