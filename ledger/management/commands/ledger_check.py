from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ledger.checks import run_checks
from ledger.selectors import trial_balance


class Command(BaseCommand):
    help = "Verify every ledger invariant; exits non-zero on any violation."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    def handle(self, *args, no_progress: bool, **options) -> None:
        with tqdm(
            desc="checking ledger", unit="rows", disable=no_progress, file=self.stderr._out
        ) as bar:
            report = run_checks(progress=bar.update)
        trial = trial_balance()
        self.stdout.write(
            f"{report.journals} journals, {report.postings} postings, {report.accounts} accounts"
        )
        self.stdout.write(
            "trial balance: "
            + ", ".join(f"{kind} {amount} msat" for kind, amount in trial.by_kind_msat.items())
        )
        if report.ok:
            self.stdout.write(self.style.SUCCESS("ledger OK: every invariant holds"))
            return
        for violation in report.violations:
            self.stdout.write(self.style.ERROR(f"VIOLATION {violation}"))
        raise CommandError(f"{len(report.violations)} ledger invariant violation(s)")
