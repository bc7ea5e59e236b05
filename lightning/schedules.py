"""The scheduled jobs and their intervals, created (or updated) after every `migrate`."""

from __future__ import annotations

from django.conf import settings

# name -> (function path, interval in minutes)
SCHEDULES: dict[str, tuple[str, int]] = {
    "poll open invoices": ("lightning.tasks.poll_open_invoices", 1),
    "track pending payments": ("lightning.tasks.track_pending_payments", 1),
    "snapshot nodes": ("lightning.tasks.snapshot_nodes", 5),
    "checkpoint hot accounts": ("lightning.tasks.checkpoint_hot_accounts", 1),
    "reconcile ledger": ("lightning.tasks.reconcile_ledger", 60),
    "batch on-chain withdrawals": (
        "onchain.tasks.batch_withdrawals",
        settings.ONCHAIN_BATCH_INTERVAL_MIN,
    ),
    "scan on-chain deposits": (
        "onchain.tasks.scan_deposits",
        settings.ONCHAIN_DEPOSIT_SCAN_INTERVAL_MIN,
    ),
}


def ensure_schedules(**kwargs) -> None:
    from django_q.models import Schedule

    for name, (func, minutes) in SCHEDULES.items():
        Schedule.objects.update_or_create(
            name=name,
            defaults={
                "func": func,
                "schedule_type": Schedule.MINUTES,
                "minutes": minutes,
                "repeats": -1,
            },
        )
