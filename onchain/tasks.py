"""Scheduled jobs of the on-chain app (django-q2; registered in lightning/schedules.py). Safe
on several workers at once: SKIP LOCKED, the batch claim and unique journal keys decide."""

from __future__ import annotations

import logging

from onchain.services import batch_round, deposits_scan

logger = logging.getLogger(__name__)


def batch_withdrawals() -> list[str]:
    return batch_round().lines


def scan_deposits() -> dict[str, int]:
    report = deposits_scan()
    counts = {
        "seen": report.seen,
        "credited": report.credited,
        "pending": report.pending,
        "dropped": report.dropped,
    }
    logger.info("on-chain deposit scan: %s, unreachable: %s", counts, report.unreachable)
    return counts
