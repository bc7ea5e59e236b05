"""`python manage.py demo`: the embedded default in one command. Migrates, creates the demo
user, then runs the web server, the django-q2 cluster (scheduled jobs) and the invoice
listener side by side until Ctrl-C, restarting none of them silently: if one dies, all stop."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand

from accounts.models import User

DEMO_USERNAME = "demo"


class Command(BaseCommand):
    help = "Migrate, create the demo user and run web + scheduled jobs + invoice listener."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--setup-only", action="store_true", help="migrate and create the demo user, then exit"
        )

    def handle(self, *args, host: str, port: int, setup_only: bool, **options) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("database migrated")
        if "ensure_default_node" in get_commands():
            call_command("ensure_default_node")
        password = self._demo_password()
        if setup_only:
            self._print_login(host, port, password)
            return

        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        commands = {
            "web": [*manage, "runserver", f"{host}:{port}", "--noreload"],
            "jobs": [*manage, "qcluster"],
        }
        if "listen" in get_commands():
            commands["listener"] = [*manage, "listen"]
        processes = {name: subprocess.Popen(argv) for name, argv in commands.items()}  # noqa: S603
        self._print_login(host, port, password)
        self.stdout.write(f"running: {', '.join(processes)} (Ctrl-C stops everything)")

        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping:
                for name, process in processes.items():
                    if process.poll() is not None:
                        self.stderr.write(f"{name} exited with {process.returncode}; stopping")
                        stopping = True
                time.sleep(0.5)
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.terminate()
            for process in processes.values():
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()

    def _demo_password(self) -> str:
        """A random password made once and kept in the var directory (never a fixed one)."""
        path = Path(settings.VAR_DIR) / "demo-password.txt"
        user = User.objects.filter(username=DEMO_USERNAME).first()
        if user is not None and path.exists():
            return path.read_text().strip()
        password = secrets.token_urlsafe(12)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(password + "\n")
        path.chmod(0o600)
        if user is None:
            User.objects.create_user(username=DEMO_USERNAME, password=password)
        else:
            user.set_password(password)
            user.save(update_fields=["password"])
        return password

    def _print_login(self, host: str, port: int, password: str) -> None:
        self.stdout.write(self.style.SUCCESS(f"Satledger is at http://{host}:{port}/"))
        self.stdout.write(f"demo login: username {DEMO_USERNAME}  password {password}")
