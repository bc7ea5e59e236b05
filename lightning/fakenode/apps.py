from django.apps import AppConfig


class FakeNodeConfig(AppConfig):
    """State of the simulated node (`type=fake`), kept in the database so that the web,
    worker and listener processes all see one node."""

    name = "lightning.fakenode"
    label = "fakenode"
    verbose_name = "Simulated node"
