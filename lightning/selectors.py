"""Reads of the lightning app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning.models import Invoice, Payment

if TYPE_CHECKING:
    from accounts.models import User


def user_deposit(*, user: User, payment_hash: str) -> Invoice | None:
    """The user's own deposit invoice; another user's hash is simply not found."""
    return Invoice.objects.filter(user=user, payment_hash=payment_hash.lower()).first()


def user_withdrawal(*, user: User, withdrawal_id: int) -> Payment | None:
    return Payment.objects.filter(user=user, pk=withdrawal_id).first()


def user_deposits(*, user: User, limit: int = 20) -> list[Invoice]:
    return list(Invoice.objects.filter(user=user).order_by("-created_at")[:limit])


def user_withdrawals(*, user: User, limit: int = 20) -> list[Payment]:
    return list(Payment.objects.filter(user=user).order_by("-created_at")[:limit])
