"""Portal pages for deposits and withdrawals (session login). Thin: one service call each;
errors with a `code` are shown as the sentence they carry."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache

from ledger.errors import LedgerError
from lightning.backends.base import LightningError
from lightning.errors import FlowError
from lightning.forms import DepositForm, WithdrawForm
from lightning.models import InvoiceStatus
from lightning.payments import withdrawal_create
from lightning.selectors import user_deposit, user_deposits, user_withdrawals
from lightning.services import deposit_create

_USER_ERRORS = (FlowError, LedgerError, LightningError)


@never_cache
@login_required
def deposit(request: HttpRequest) -> HttpResponse:
    form = DepositForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        amount_sat = form.cleaned_data["amount_sat"]
        try:
            invoice = deposit_create(
                user=request.user,
                amount_msat=amount_sat * 1000 if amount_sat else None,
                memo=form.cleaned_data["memo"],
            )
        except _USER_ERRORS as error:
            form.add_error(None, error.message)
        else:
            return redirect("deposit-detail", payment_hash=invoice.payment_hash)
    context = {"form": form, "deposits": user_deposits(user=request.user, limit=10)}
    return render(request, "portal/deposit.html", context)


@never_cache
@login_required
def deposit_detail(request: HttpRequest, payment_hash: str) -> HttpResponse:
    invoice = user_deposit(user=request.user, payment_hash=payment_hash)
    if invoice is None:
        raise Http404
    # While open, the page refreshes itself so the user sees the payment arrive.
    refresh = invoice.status == InvoiceStatus.OPEN
    return render(request, "portal/deposit_detail.html", {"invoice": invoice, "refresh": refresh})


@never_cache
@login_required
def withdraw(request: HttpRequest) -> HttpResponse:
    form = WithdrawForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        amount_sat = form.cleaned_data["amount_sat"]
        try:
            payment = withdrawal_create(
                user=request.user,
                bolt11=form.cleaned_data["bolt11"],
                amount_msat=amount_sat * 1000 if amount_sat else None,
            )
        except _USER_ERRORS as error:
            form.add_error(None, error.message)
        else:
            level = {"succeeded": messages.SUCCESS, "failed": messages.ERROR}.get(
                payment.status, messages.INFO
            )
            text = {
                "succeeded": f"Paid {payment.amount_msat} msat (fee {payment.fee_msat or 0} msat).",
                "failed": f"The payment failed and was refunded: {payment.failure_reason}.",
                "pending": "The payment is in flight; its amount is reserved until it completes.",
            }[payment.status]
            messages.add_message(request, level, text)
            return redirect("withdraw")
    context = {"form": form, "payments": user_withdrawals(user=request.user, limit=10)}
    return render(request, "portal/withdraw.html", context)
