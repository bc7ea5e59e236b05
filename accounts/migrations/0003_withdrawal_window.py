"""The daily withdrawal limit as a running total per user (WithdrawalWindow) and per minute
(WithdrawalMinute), filled here from the withdrawals that count now: Lightning payments that
are pending or succeeded and on-chain withdrawals that are not failed or cancelled, created in
the last 24 hours (the rule the totals replace). Stop the service while this runs: a
withdrawal made meanwhile by code that does not count it would not be counted."""

from collections import defaultdict
from datetime import timedelta

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.utils import timezone


def count_recent_withdrawals(apps, schema_editor):
    Payment = apps.get_model("lightning", "Payment")
    OnchainWithdrawal = apps.get_model("onchain", "OnchainWithdrawal")
    WithdrawalWindow = apps.get_model("accounts", "WithdrawalWindow")
    WithdrawalMinute = apps.get_model("accounts", "WithdrawalMinute")
    start = (timezone.now() - timedelta(hours=24)).replace(second=0, microsecond=0)
    minutes: dict[tuple[int, object], int] = defaultdict(int)
    for user_id, created_at, amount_msat in Payment.objects.filter(
        created_at__gte=start, status__in=["pending", "succeeded"]
    ).values_list("user_id", "created_at", "amount_msat"):
        minutes[user_id, created_at.replace(second=0, microsecond=0)] += amount_msat
    for user_id, created_at, amount_sat in OnchainWithdrawal.objects.filter(
        created_at__gte=start, status__in=["queued", "batched", "broadcast", "confirmed"]
    ).values_list("user_id", "created_at", "amount_sat"):
        minutes[user_id, created_at.replace(second=0, microsecond=0)] += amount_sat * 1000
    totals: dict[int, int] = defaultdict(int)
    for (user_id, _), amount in minutes.items():
        totals[user_id] += amount
    WithdrawalMinute.objects.bulk_create(
        WithdrawalMinute(user_id=user_id, minute=minute, amount_msat=amount)
        for (user_id, minute), amount in minutes.items()
    )
    # limit_msat only has to allow the total: the next withdrawal writes the user's limit.
    WithdrawalWindow.objects.bulk_create(
        WithdrawalWindow(user_id=user_id, counted_from=start, total_msat=total, limit_msat=total)
        for user_id, total in totals.items()
    )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_api_keys_limits_idempotency"),
        # the backfill reads them
        ("lightning", "0002_payment_indexes"),
        ("onchain", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="WithdrawalWindow",
            fields=[
                (
                    "user",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                ("counted_from", models.DateTimeField()),
                ("total_msat", models.BigIntegerField()),
                ("limit_msat", models.BigIntegerField()),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("total_msat__gte", 0)),
                        name="accounts_withdrawalwindow_total_not_below_0",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("total_msat__lte", models.F("limit_msat"))),
                        name="accounts_withdrawalwindow_within_limit",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="WithdrawalMinute",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("minute", models.DateTimeField()),
                ("amount_msat", models.BigIntegerField()),
                (
                    "user",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("user", "minute"), name="accounts_withdrawalminute_user_minute"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("amount_msat__gte", 0)),
                        name="accounts_withdrawalminute_not_below_0",
                    ),
                ],
            },
        ),
        migrations.RunPython(count_recent_withdrawals, migrations.RunPython.noop),
    ]
