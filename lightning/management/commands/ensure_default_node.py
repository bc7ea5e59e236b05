from django.core.management.base import BaseCommand

from lightning.nodes import ensure_default_node


class Command(BaseCommand):
    help = "Register LIGHTNING_DEFAULT_NODE as node 'default' when no node is registered yet."

    def handle(self, *args, **options) -> None:
        node = ensure_default_node()
        if node:
            self.stdout.write(f"registered node {node.name} ({node.connection_redacted})")
