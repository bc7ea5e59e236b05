import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from ledger import services
from ledger.checks import run_checks


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
