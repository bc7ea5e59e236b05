"""`python manage.py onchain_batch [--force]`: one round of the batch job — confirmations of
broadcast batches, recovery of batches with an unknown outcome, then new batches from the
queue — and what it did."""

from django.core.management.base import BaseCommand

from onchain.services import batch_round


class Command(BaseCommand):
    help = "Run one round of on-chain withdrawal batching and print what it did."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--force",
            action="store_true",
            help="send what is queued now, ignoring the size/wait thresholds and the pause",
        )

    def handle(self, *args, force: bool = False, **options) -> None:
        report = batch_round(force=force)
        for line in report.lines or ["nothing to do"]:
            self.stdout.write(line)
        self.stdout.write(
            f"sent {len(report.sent)}, recovered {len(report.recovered)}, "
            f"confirmed {len(report.confirmed)}, failed {len(report.failed)}, "
            f"unknown {len(report.unknown)}"
        )
