"""Payment.created_at: a default instead of auto_now_add, so an internal payment can be created
and resolved at one instant. No change in the database."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("lightning", "0003_drop_daily_sum_index"),
    ]

    operations = [
        migrations.AlterField(
            model_name="payment",
            name="created_at",
            field=models.DateTimeField(default=django.utils.timezone.now, editable=False),
        ),
    ]
