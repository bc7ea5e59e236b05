"""Drop the invoice indexes that only cost writes (an internal payment's settle update
writes every index of the row again): the LIKE indexes PostgreSQL gets for `unique=True`
CharFields (payment_hash and label stay unique through named constraints, created before
the old ones go) and the single-column `user` index that lightning_invoice_user
(user, -created_at) already covers."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("lightning", "0004_payment_created_at_default"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="invoice",
            constraint=models.UniqueConstraint(
                fields=("payment_hash",), name="lightning_invoice_payment_hash_unique"
            ),
        ),
        migrations.AddConstraint(
            model_name="invoice",
            constraint=models.UniqueConstraint(
                fields=("label",), name="lightning_invoice_label_unique"
            ),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="label",
            field=models.CharField(max_length=100),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="payment_hash",
            field=models.CharField(max_length=64),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="user",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="invoices",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
    ]
