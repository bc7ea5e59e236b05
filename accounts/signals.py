"""Every user gets a ledger account when created, whichever path created it (service,
createsuperuser, admin)."""

from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="accounts.user_ledger_account")
def _create_user_ledger_account(
    sender, instance, created: bool, raw: bool = False, **kwargs
) -> None:
    if created and not raw:
        from ledger.services import user_account_get_or_create

        user_account_get_or_create(user=instance)
