"""Test-only API views: a money-moving POST (a ledger transfer between two users) behind
@idempotent, and views raising chosen errors. Routed by tests/accounts/urls.py only."""

from __future__ import annotations

import threading
import time
import uuid

from django.http import HttpResponse
from rest_framework import serializers
from rest_framework.response import Response

from accounts.api.fields import MsatField, StrictSerializer
from accounts.api.idempotency import idempotent
from accounts.api.views import ApiView
from accounts.models import User
from ledger import services as ledger
from ledger.errors import InsufficientBalance
from lightning.backends.base import NodeUnreachable, OutcomeUnknown
from lightning.errors import LimitExceeded

executions = {"count": 0}
_lock = threading.Lock()
pause = {"seconds": 0.0}


class TransferIn(StrictSerializer):
    to = serializers.UUIDField()
    amount_msat = MsatField()
    memo = serializers.CharField(required=False, allow_blank=True, max_length=100)


class TransferView(ApiView):
    required_scope = "send"

    @idempotent()
    def post(self, request):
        data = TransferIn(data=request.data)
        data.is_valid(raise_exception=True)
        recipient = User.objects.get(uuid=data.validated_data["to"])
        with _lock:
            executions["count"] += 1
        # A fresh journal key on purpose: only the Idempotency-Key layer prevents a double.
        journal = ledger.transfer(
            idempotency_key=f"test-transfer:{uuid.uuid4()}",
            kind="internal_payment",
            debit=ledger.user_account_get_or_create(user=request.user),
            credit=ledger.user_account_get_or_create(user=recipient),
            amount_msat=data.validated_data["amount_msat"],
            memo=data.validated_data.get("memo", ""),
        )
        time.sleep(pause["seconds"])
        return Response({"journal_id": journal.pk, "amount_msat": journal_amount(journal)}, 201)


def journal_amount(journal) -> int:
    return max(p.amount_msat for p in journal.postings.all())


ERRORS = {
    "insufficient": lambda: InsufficientBalance("the balance is too low for this amount"),
    "node_down": lambda: NodeUnreachable("connect to 10.0.0.1:10009 failed: secret-macaroon"),
    "unknown_outcome": lambda: OutcomeUnknown("timeout after sending"),
    "limit": lambda: LimitExceeded("over your limit", max_withdrawal_msat=1000),
    "bug": lambda: RuntimeError("unexpected: secret internals"),
}


class RaiseView(ApiView):
    required_scope = "read"

    def get(self, request, name: str):
        raise ERRORS[name]()


class IdempotentRaiseView(ApiView):
    required_scope = "send"

    @idempotent()
    def post(self, request, name: str):
        with _lock:
            executions["count"] += 1
        raise ERRORS[name]()


def plain_boom(request):
    """A plain Django view under /api/ that crashes: Django's handler500 answers."""
    raise RuntimeError("plain view crashed")


def plain_ok(request):
    return HttpResponse("ok")
