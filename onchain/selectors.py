"""Reads of the on-chain app. Nothing here writes."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from django.db.models import QuerySet

from onchain.models import OnchainDeposit, OnchainWithdrawal, WithdrawalStatus

if TYPE_CHECKING:
    from accounts.models import User

# Requests whose money is gone or going: counted against the daily withdrawal limit.
LIVE_WITHDRAWAL_STATUSES = (
    WithdrawalStatus.QUEUED,
    WithdrawalStatus.BATCHED,
    WithdrawalStatus.BROADCAST,
    WithdrawalStatus.CONFIRMED,
)


def withdrawal_for_user(*, user: User, public_id: UUID) -> OnchainWithdrawal:
    """The user's own request; OnchainWithdrawal.DoesNotExist for anyone else's."""
    return OnchainWithdrawal.objects.select_related("batch").get(user=user, public_id=public_id)


def withdrawals_for_user(*, user: User, limit: int = 50) -> QuerySet[OnchainWithdrawal]:
    return OnchainWithdrawal.objects.filter(user=user).select_related("batch")[:limit]


def deposits_for_user(*, user: User, limit: int = 50) -> QuerySet[OnchainDeposit]:
    return OnchainDeposit.objects.filter(user=user).select_related("deposit_address")[:limit]
