import signal
import threading

from django.core.management.base import BaseCommand

from lightning.listener import run_listeners


class Command(BaseCommand):
    help = "Run one settled-invoice listener per enabled node until stopped (SIGINT/SIGTERM)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("nodes", nargs="*", help="only these nodes (default: all enabled)")

    def handle(self, *args, nodes: list[str], **options) -> None:
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        self.stdout.write(f"listening to {', '.join(nodes) if nodes else 'every enabled node'}")
        run_listeners(stop=stop, node_names=nodes or None)
        self.stdout.write("listeners stopped")
