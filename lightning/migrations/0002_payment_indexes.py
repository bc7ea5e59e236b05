"""Payment indexes that earn their writes: one index on the hash (no LIKE index), none on
user alone (lightning_payment_user starts with it), and a covering partial index for the
daily withdrawal limit's sum (index-only on PostgreSQL; skipped on SQLite)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("lightning", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="payment",
            name="payment_hash",
            field=models.CharField(max_length=64),
        ),
        migrations.AlterField(
            model_name="payment",
            name="user",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="payments",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddIndex(
            model_name="payment",
            index=models.Index(fields=["payment_hash"], name="lightning_payment_hash"),
        ),
        migrations.AddIndex(
            model_name="payment",
            index=models.Index(
                condition=models.Q(("status__in", ["pending", "succeeded"])),
                fields=["user", "created_at"],
                include=("amount_msat",),
                name="lightning_payment_user_live",
            ),
        ),
    ]
