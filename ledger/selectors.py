"""Reads of the ledger. Nothing here writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from django.db.models import Sum

from ledger.models import (
    Account,
    AccountCheckpoint,
    AccountKind,
    PendingTransfer,
    PendingTransferState,
    Posting,
    natural_sign,
)
from ledger.services import user_account_code

if TYPE_CHECKING:
    from accounts.models import User


def user_account(*, user: User) -> Account:
    return Account.objects.get(code=user_account_code(user))


def user_balance_msat(*, user: User) -> int:
    """O(1) whatever the history: the cached balance on the user's account row."""
    return (
        Account.objects.filter(code=user_account_code(user))
        .values_list("balance_msat", flat=True)
        .get()
    )


def user_pending_msat(*, user: User) -> int:
    """Money reserved by the user's unresolved two-phase transfers (withdrawals in flight)."""
    return PendingTransfer.objects.filter(
        debit_account__code=user_account_code(user), state=PendingTransferState.PENDING
    ).aggregate(total=Sum("amount_msat", default=0))["total"]


def account_balance_msat(*, account: Account) -> int:
    """Natural balance of any account: the cached row for user accounts; checkpoint plus the
    postings since for hot system accounts."""
    if account.cached:
        return Account.objects.values_list("balance_msat", flat=True).get(pk=account.pk)
    checkpoint = AccountCheckpoint.objects.filter(account=account).first()
    through, balance = (
        (checkpoint.through_posting_id, checkpoint.balance_msat) if checkpoint else (0, 0)
    )
    delta = Posting.objects.filter(account=account, id__gt=through).aggregate(
        total=Sum("amount_msat", default=0)
    )["total"]
    return balance + natural_sign(account.kind) * delta


@dataclass(frozen=True, slots=True)
class StatementLine:
    posting_id: int
    journal_id: int
    kind: str
    memo: str
    reference_type: str
    reference_id: str
    amount_msat: int  # natural orientation: + raises the balance, - lowers it
    balance_after_msat: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StatementPage:
    lines: list[StatementLine]
    next_cursor: int | None  # pass as `before` for the next (older) page


def account_statement(
    *, account: Account, before: int | None = None, limit: int = 50
) -> StatementPage:
    """Newest first, keyset-paginated on the posting id. A cached account's postings get
    their ids under the account's row lock, so id order is balance order and a page never
    shifts when new postings arrive."""
    limit = max(1, min(limit, 500))
    postings = Posting.objects.filter(account=account)
    if before is not None:
        postings = postings.filter(id__lt=before)
    rows = list(
        postings.order_by("-id")
        .select_related("journal")
        .only(
            "id",
            "amount_msat",
            "balance_after_msat",
            "journal__id",
            "journal__kind",
            "journal__memo",
            "journal__reference_type",
            "journal__reference_id",
            "journal__created_at",
        )[: limit + 1]
    )
    sign = natural_sign(account.kind)
    lines = [
        StatementLine(
            posting_id=posting.id,
            journal_id=posting.journal.id,
            kind=posting.journal.kind,
            memo=posting.journal.memo,
            reference_type=posting.journal.reference_type,
            reference_id=posting.journal.reference_id,
            amount_msat=sign * posting.amount_msat,
            balance_after_msat=posting.balance_after_msat,
            created_at=posting.journal.created_at,
        )
        for posting in rows[:limit]
    ]
    next_cursor = lines[-1].posting_id if len(rows) > limit else None
    return StatementPage(lines=lines, next_cursor=next_cursor)


@dataclass(frozen=True, slots=True)
class TrialBalance:
    by_kind_msat: dict[str, int]  # natural orientation per kind
    net_debits_msat: int  # sum of every posting: zero in a sound ledger

    @property
    def balanced(self) -> bool:
        return self.net_debits_msat == 0


def trial_balance() -> TrialBalance:
    """Totals per account kind. Assets + expenses = liabilities + equity + income."""
    raw = dict(
        Posting.objects.values_list("account__kind")
        .annotate(total=Sum("amount_msat"))
        .values_list("account__kind", "total")
    )
    by_kind = {
        kind.value: natural_sign(kind.value) * raw.get(kind.value, 0) for kind in AccountKind
    }
    return TrialBalance(by_kind_msat=by_kind, net_debits_msat=sum(raw.values()))
