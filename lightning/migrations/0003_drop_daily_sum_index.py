"""The daily limit no longer sums payments (accounts.WithdrawalWindow keeps the total): the
covering index that served the sum only costs writes now."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("lightning", "0002_payment_indexes"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="payment",
            name="lightning_payment_user_live",
        ),
    ]
