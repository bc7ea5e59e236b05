"""Scheduled jobs (django-q2). Each is safe to run on several workers at once: correctness
comes from row locks and unique keys, never from there being one worker."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from ledger.checks import run_checks
from ledger.services import hot_account_checkpoint
from lightning.models import Node, NodeSnapshot
from lightning.nodes import node_check
from lightning.payments import payments_track_pending
from lightning.services import invoices_poll_open

logger = logging.getLogger(__name__)


def poll_open_invoices() -> dict[str, int]:
    counts = invoices_poll_open()
    logger.info("poll open invoices: %s", counts)
    return counts


def track_pending_payments() -> dict[str, int]:
    counts = payments_track_pending()
    logger.info("track pending payments: %s", counts)
    return counts


SNAPSHOT_RETENTION = timedelta(days=7)


def snapshot_nodes() -> dict[str, bool]:
    """Health and liquidity of every enabled node, for selection and the admin; snapshots
    older than a week are dropped."""
    NodeSnapshot.objects.filter(taken_at__lt=timezone.now() - SNAPSHOT_RETENTION).delete()
    return {
        node.name: node_check(node=node, snapshot=True).healthy
        for node in Node.objects.filter(enabled=True)
    }


def checkpoint_hot_accounts() -> int:
    return hot_account_checkpoint()


def reconcile_ledger() -> bool:
    """Run every ledger invariant check; violations are logged at ERROR for alerting."""
    report = run_checks()
    for violation in report.violations:
        logger.error("ledger invariant violated: %s", violation)
    return report.ok
