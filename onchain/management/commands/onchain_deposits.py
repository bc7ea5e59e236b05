"""`python manage.py onchain_deposits`: one scan of the on-chain nodes' wallets for deposits."""

from django.core.management.base import BaseCommand

from onchain.services import deposits_scan


class Command(BaseCommand):
    help = "Scan on-chain nodes for deposits; credit those with enough confirmations."

    def handle(self, *args, **options) -> None:
        report = deposits_scan()
        self.stdout.write(
            f"seen {report.seen}, credited {report.credited}, pending {report.pending}, "
            f"dropped {report.dropped}"
            + (f", unreachable: {', '.join(report.unreachable)}" if report.unreachable else "")
        )
