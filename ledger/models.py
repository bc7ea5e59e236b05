"""Double-entry ledger: accounts, journals, postings.

Sign convention: a posting's `amount_msat` is positive for a debit and negative for a credit,
so the postings of every journal sum to zero. An account's balance is shown in its natural
orientation: debit-normal kinds (asset, expense) show sum(amount), credit-normal kinds
(liability, income, equity) show -sum(amount). A user's account is a liability (we owe them),
so a deposit credits it and its balance goes up.

Rows here are written only by `ledger.services`; the database refuses UPDATE and DELETE of
journals and postings and keeps cached balances itself (see the migrations' triggers).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class AccountKind(models.TextChoices):
    ASSET = "asset", "Asset"
    LIABILITY = "liability", "Liability"
    EQUITY = "equity", "Equity"
    INCOME = "income", "Income"
    EXPENSE = "expense", "Expense"


DEBIT_NORMAL_KINDS = frozenset({AccountKind.ASSET, AccountKind.EXPENSE})


def natural_sign(kind: str) -> int:
    """+1 where a debit raises the balance (asset, expense), -1 where a credit does."""
    return 1 if kind in DEBIT_NORMAL_KINDS else -1


class Account(models.Model):
    code = models.CharField(max_length=200, unique=True)
    name = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=16, choices=AccountKind.choices)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="ledger_accounts",
    )
    allow_negative = models.BooleanField(default=False)
    # True: balance_msat is kept on this row under a row lock (users). False: a "hot" system
    # account touched by every deposit; its balance is summed from postings (plus a
    # checkpoint) so that concurrent journals never queue on its row.
    cached = models.BooleanField(default=True)
    balance_msat = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    # `kind` is one of AccountKind by the database's account guard (ledger.db_guards), checked
    # on insert; a CHECK would be re-read on every balance update.
    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(allow_negative=True) | (Q(cached=True) & Q(balance_msat__gte=0)),
                name="ledger_account_non_negative",
                violation_error_message="balance would go below zero",
            ),
            models.CheckConstraint(
                condition=Q(cached=True) | Q(balance_msat=0),
                name="ledger_account_uncached_has_no_balance",
            ),
        ]

    def __str__(self) -> str:
        return self.code

    @property
    def sign(self) -> int:
        return natural_sign(self.kind)


class Journal(models.Model):
    # Unique by the constraint below, not `unique=True`: on PostgreSQL that would add a second,
    # LIKE-only index, written on every journal and read by nothing. `kind` is not indexed:
    # only the admin filters by it (over the id-ordered list).
    idempotency_key = models.CharField(max_length=200)
    kind = models.CharField(max_length=64)
    memo = models.TextField(blank=True)
    # The business object that caused this journal, e.g. ("lightning.invoice", "42").
    reference_type = models.CharField(max_length=64, blank=True)
    reference_id = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    # A journal can be reversed at most once (unique).
    reverses = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="reversed_by"
    )
    created_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["reference_type", "reference_id"], name="ledger_journal_ref")
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"], name="ledger_journal_idempotency_key_unique"
            )
        ]

    def __str__(self) -> str:
        return self.idempotency_key


class Posting(models.Model):
    journal = models.ForeignKey(Journal, on_delete=models.PROTECT, related_name="postings")
    # Indexed by ledger_posting_account_id (account, -id) below, which serves every lookup by
    # account: the default single-column index would be a second write per posting.
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="postings", db_index=False
    )
    amount_msat = models.BigIntegerField()  # + debit, - credit
    # For cached accounts: the account's natural balance right after this posting (the
    # statement's running balance, checked by the database on insert). Null for hot accounts.
    balance_after_msat = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(amount_msat=0), name="ledger_posting_nonzero"),
        ]
        indexes = [models.Index(fields=["account", "-id"], name="ledger_posting_account_id")]

    def __str__(self) -> str:
        return f"{self.account_id} {self.amount_msat:+d}"


class PendingTransferState(models.TextChoices):
    PENDING = "pending", "Pending"
    POSTED = "posted", "Posted"
    VOIDED = "voided", "Voided"


class PendingTransfer(models.Model):
    """Two-phase transfer (TigerBeetle's pending transfer): `amount_msat` moved from
    `debit_account` into the holding `credit_account` by `reserve_journal`; later posted to
    its destinations (the unused part returned) or voided (all returned), exactly once."""

    key = models.CharField(max_length=200, unique=True)
    debit_account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+")
    credit_account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+")
    amount_msat = models.BigIntegerField()
    state = models.CharField(
        max_length=16, choices=PendingTransferState.choices, default=PendingTransferState.PENDING
    )
    reserve_journal = models.OneToOneField(Journal, on_delete=models.PROTECT, related_name="+")
    resolve_journal = models.OneToOneField(
        Journal, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount_msat__gt=0), name="ledger_pending_positive"),
            models.CheckConstraint(
                condition=Q(state="pending", resolve_journal__isnull=True)
                | (~Q(state="pending") & Q(resolve_journal__isnull=False)),
                name="ledger_pending_resolution_consistent",
            ),
        ]
        indexes = [models.Index(fields=["state"], name="ledger_pending_state")]

    def __str__(self) -> str:
        return f"{self.key} ({self.state})"


class AccountCheckpoint(models.Model):
    """Balance of a hot (uncached) account through a posting id, so its balance is
    checkpoint + the few postings since, not a scan of its whole history."""

    account = models.OneToOneField(Account, on_delete=models.PROTECT, related_name="checkpoint")
    through_posting_id = models.BigIntegerField()
    balance_msat = models.BigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.account_id} through posting {self.through_posting_id}"
