from django.apps import AppConfig


class LightningConfig(AppConfig):
    name = "lightning"
    verbose_name = "Lightning"
