import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from ledger import services
from ledger.checks import run_checks
from ledger.models import Journal, Posting


def test_ledger_check_passes_on_a_sound_ledger(funded, in_flight, capsys):
    _, account = funded(10_000)
    services.pending_transfer_reserve(
        key="w:lc", kind="withdrawal_reserve", debit=account, holding=in_flight, amount_msat=2_500
    )
    services.hot_account_checkpoint()
    call_command("ledger_check", "--no-progress")
    assert "ledger OK" in capsys.readouterr().out


@pytest.mark.postgres_only
def test_ledger_check_reports_a_tampered_balance(funded):
    """Tamper with the triggers off (as a superuser restoring a bad backup could)."""
    _, account = funded(10_000)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET LOCAL session_replication_role = replica")  # triggers off
        cursor.execute("UPDATE ledger_account SET balance_msat = 99 WHERE id = %s", [account.pk])
        cursor.execute("SET LOCAL session_replication_role = origin")
    report = run_checks()
    assert not report.ok
    assert any("cached balance 99" in violation for violation in report.violations)
    with pytest.raises(CommandError):
        call_command("ledger_check", "--no-progress")


def _tamper(sql: str, params: list) -> None:
    """Write with every trigger off (as a superuser restoring a bad backup could)."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)
        cursor.execute("SET LOCAL session_replication_role = origin")


@pytest.mark.postgres_only
@pytest.mark.parametrize("hot", [False, True], ids=["user-without-running", "hot-with-running"])
def test_ledger_check_reports_a_missing_or_stray_running_balance(funded, node_account, hot):
    """A posting on a user account must carry its running balance, and one on a hot account
    must not: a NULL (or a stray value) is a violation, not an unknown to skip."""
    _, account = funded(10_000)
    posting = Posting.objects.get(account=node_account if hot else account)
    journal_id = posting.journal_id
    _tamper(
        "INSERT INTO ledger_journal (idempotency_key, kind, memo, reference_type, "
        "reference_id, created_at) VALUES ('tampered', 'raw', '', '', '', now())",
        [],
    )
    new_journal = Journal.objects.get(idempotency_key="tampered").pk
    # a balanced journal that moves 1 msat onto the user's account, with the account's
    # cached balance moved to match, so that only the running balance is wrong
    _tamper(
        "INSERT INTO ledger_posting (journal_id, account_id, amount_msat, balance_after_msat) "
        "VALUES (%s, %s, -1, %s), (%s, %s, 1, %s)",
        [
            new_journal,
            account.pk,
            None if not hot else 10_001,
            new_journal,
            node_account.pk,
            None if not hot else 7,
        ],
    )
    _tamper("UPDATE ledger_account SET balance_msat = 10001 WHERE id = %s", [account.pk])
    assert journal_id != new_journal
    report = run_checks()
    assert not report.ok
    assert any("running balance" in violation for violation in report.violations), report.violations
