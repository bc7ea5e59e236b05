"""Invariant checks over the whole ledger (used by `manage.py ledger_check`, the tests and the
reconciliation job). Each check scans in id-range chunks so memory stays flat on large
ledgers, and reports progress through an optional callback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import Max

from ledger.models import Posting

CHUNK = 200_000
Progress = Callable[[int], None]


@dataclass
class CheckReport:
    journals: int = 0
    postings: int = 0
    accounts: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def _rows(sql: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


_NATURAL = "CASE WHEN a.kind IN ('asset', 'expense') THEN 1 ELSE -1 END"


def run_checks(*, progress: Progress | None = None, limit_violations: int = 50) -> CheckReport:
    report = CheckReport()
    top = Posting.objects.aggregate(top=Max("id"))["top"] or 0
    report.postings = Posting.objects.count()
    report.journals = _rows("SELECT COUNT(*) FROM ledger_journal", [])[0][0]
    report.accounts = _rows("SELECT COUNT(*) FROM ledger_account", [])[0][0]

    def add(message: str) -> None:
        if len(report.violations) < limit_violations:
            report.violations.append(message)

    # 1. Every journal's postings sum to zero, with at least two postings (by journal chunks).
    journal_top = _rows("SELECT COALESCE(MAX(id), 0) FROM ledger_journal", [])[0][0]
    for start in range(0, journal_top + 1, CHUNK):
        for journal_id, total, legs in _rows(
            "SELECT j.id, COALESCE(SUM(p.amount_msat), 0), COUNT(p.id) FROM ledger_journal j "
            "LEFT JOIN ledger_posting p ON p.journal_id = j.id WHERE j.id > %s AND j.id <= %s "
            "GROUP BY j.id HAVING COALESCE(SUM(p.amount_msat), 0) <> 0 OR COUNT(p.id) < 2",
            [start, start + CHUNK],
        ):
            add(f"journal {journal_id}: {legs} postings summing to {total} msat")
        if progress:
            progress(min(CHUNK, max(journal_top - start, 0)))

    # 2. Cached balances equal the sum of their postings; non-negative accounts are >= 0;
    #    hot accounts keep nothing on their row and their checkpoints match their postings.
    for code, cached, allow_negative, stored, summed, checkpoint_ok in _rows(
        f"SELECT a.code, a.cached, a.allow_negative, a.balance_msat, "
        f"{_NATURAL} * COALESCE((SELECT SUM(p.amount_msat) FROM ledger_posting p "
        f"WHERE p.account_id = a.id), 0), "
        f"(SELECT c.balance_msat = {_NATURAL} * COALESCE((SELECT SUM(p.amount_msat) "
        f"FROM ledger_posting p WHERE p.account_id = a.id AND p.id <= c.through_posting_id), 0) "
        f"FROM ledger_accountcheckpoint c WHERE c.account_id = a.id) "
        f"FROM ledger_account a ORDER BY a.id",
        [],
    ):
        if cached and stored != summed:
            add(f"account {code}: cached balance {stored} but postings sum to {summed}")
        if not cached and stored != 0:
            add(f"account {code}: hot account carries a row balance of {stored}")
        if not allow_negative and summed < 0:
            add(f"account {code}: balance {summed} is below zero")
        if checkpoint_ok is not None and not checkpoint_ok:
            add(f"account {code}: checkpoint does not match its postings")

    # 3. Running balances on cached accounts follow their postings, in id order; a missing
    #    one is a violation too, and so is a running balance on a hot account (which has none).
    for start in range(0, top + 1, CHUNK):
        for posting_id, code, stored, expected in _rows(
            f"SELECT x.id, x.code, x.balance_after_msat, x.expected FROM ("
            f"SELECT p.id, a.code, p.balance_after_msat, CASE WHEN a.cached THEN "
            f"{_NATURAL} * SUM(p.amount_msat) OVER (PARTITION BY p.account_id ORDER BY p.id) "
            f"END AS expected "
            f"FROM ledger_posting p JOIN ledger_account a ON a.id = p.account_id) x "
            f"WHERE x.id > %s AND x.id <= %s AND (x.balance_after_msat <> x.expected "
            f"OR (x.balance_after_msat IS NULL) <> (x.expected IS NULL))",
            [start, start + CHUNK],
        ):
            add(f"posting {posting_id} on {code}: running balance {stored}, expected {expected}")
        if progress:
            progress(min(CHUNK, max(top - start, 0)))

    # 4. Holding accounts of two-phase transfers hold exactly the open reservations.
    for code, balance, reserved in _rows(
        f"SELECT a.code, {_NATURAL} * COALESCE((SELECT SUM(p.amount_msat) FROM ledger_posting p "
        f"WHERE p.account_id = a.id), 0), COALESCE((SELECT SUM(t.amount_msat) "
        f"FROM ledger_pendingtransfer t "
        f"WHERE t.credit_account_id = a.id AND t.state = 'pending'), 0) "
        f"FROM ledger_account a WHERE a.id IN "
        f"(SELECT DISTINCT credit_account_id FROM ledger_pendingtransfer)",
        [],
    ):
        if balance != reserved:
            add(f"holding account {code}: balance {balance} but open reservations total {reserved}")

    # 5. The trial balance nets to zero.
    net = _rows("SELECT COALESCE(SUM(amount_msat), 0) FROM ledger_posting", [])[0][0]
    if net != 0:
        add(f"trial balance: postings net to {net} msat, not zero")
    return report
