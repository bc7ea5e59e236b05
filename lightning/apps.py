from django.apps import AppConfig
from django.db.models.signals import post_migrate


class LightningConfig(AppConfig):
    name = "lightning"
    verbose_name = "Lightning"

    def ready(self) -> None:
        from lightning.schedules import ensure_schedules

        post_migrate.connect(ensure_schedules, sender=self, dispatch_uid="lightning.schedules")
