"""REST API v1 for Lightning deposits and withdrawals. Thin: parse, call one service, render.
Errors (FlowError, LedgerError, LightningError) become the API's one error shape in
accounts.api.errors."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api.fields import MsatField, StrictSerializer
from accounts.api.idempotency import idempotent
from accounts.api.views import ApiView
from accounts.models import ApiScope
from lightning.models import PaymentStatus
from lightning.payments import withdrawal_create
from lightning.selectors import user_deposit, user_withdrawal
from lightning.services import deposit_create

_ERROR = OpenApiResponse(description='{"error": {"code", "message", "details"}}')
_ERRORS = {400: _ERROR, 401: _ERROR, 403: _ERROR, 409: _ERROR, 429: _ERROR, 503: _ERROR}


class DepositRequestSerializer(StrictSerializer):
    amount_msat = MsatField(required=False, allow_null=True, default=None)
    memo = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")


class DepositSerializer(serializers.Serializer):
    payment_hash = serializers.CharField()
    bolt11 = serializers.CharField()
    amount_msat = serializers.IntegerField(allow_null=True)
    amount_received_msat = serializers.IntegerField()
    memo = serializers.CharField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    settled_at = serializers.DateTimeField(allow_null=True)


class WithdrawalRequestSerializer(StrictSerializer):
    bolt11 = serializers.CharField(max_length=4000, trim_whitespace=True)
    amount_msat = MsatField(required=False, allow_null=True, default=None)
    max_fee_msat = MsatField(required=False, allow_null=True, default=None, min_value=0)


class WithdrawalSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    internal = serializers.BooleanField()
    amount_msat = serializers.IntegerField()
    fee_msat = serializers.IntegerField(allow_null=True)
    fee_reserve_msat = serializers.IntegerField()
    payment_hash = serializers.CharField()
    preimage = serializers.CharField(allow_null=True)
    failure_reason = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    resolved_at = serializers.DateTimeField(allow_null=True)


# The views render these dicts directly (the same JSON as the serializers above, which
# document the shapes in the OpenAPI schema): a serializer costs ~0.2 ms a response.


def _deposit_data(invoice) -> dict:
    return {
        "payment_hash": invoice.payment_hash,
        "bolt11": invoice.bolt11,
        "amount_msat": invoice.amount_msat,
        "amount_received_msat": invoice.amount_received_msat,
        "memo": invoice.memo,
        "status": invoice.status,
        "created_at": invoice.created_at,
        "expires_at": invoice.expires_at,
        "settled_at": invoice.settled_at,
    }


def _withdrawal_data(payment) -> dict:
    return {
        "id": payment.pk,
        "status": payment.status,
        "internal": payment.internal,
        "amount_msat": payment.amount_msat,
        "fee_msat": payment.fee_msat,
        "fee_reserve_msat": payment.fee_reserve_msat,
        "payment_hash": payment.payment_hash,
        "preimage": payment.preimage or None,
        "failure_reason": payment.failure_reason or None,
        "created_at": payment.created_at,
        "resolved_at": payment.resolved_at,
    }


class DepositsView(ApiView):
    required_scope = ApiScope.RECEIVE

    @extend_schema(request=DepositRequestSerializer, responses={201: DepositSerializer, **_ERRORS})
    @idempotent()
    def post(self, request: Request) -> Response:
        body = DepositRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        invoice = deposit_create(
            user=request.user,
            amount_msat=body.validated_data["amount_msat"],
            memo=body.validated_data["memo"],
        )
        return Response(_deposit_data(invoice), status=201)


class DepositDetailView(ApiView):
    required_scope = ApiScope.READ

    @extend_schema(responses={200: DepositSerializer, 404: _ERROR, **_ERRORS})
    def get(self, request: Request, payment_hash: str) -> Response:
        invoice = user_deposit(user=request.user, payment_hash=payment_hash)
        if invoice is None:
            raise Http404
        return Response(_deposit_data(invoice))


class WithdrawalsView(ApiView):
    required_scope = ApiScope.SEND

    @extend_schema(
        request=WithdrawalRequestSerializer,
        responses={201: WithdrawalSerializer, 202: WithdrawalSerializer, **_ERRORS},
    )
    @idempotent()
    def post(self, request: Request) -> Response:
        body = WithdrawalRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        payment = withdrawal_create(
            user=request.user,
            bolt11=body.validated_data["bolt11"],
            amount_msat=body.validated_data["amount_msat"],
            max_fee_msat=body.validated_data["max_fee_msat"],
            idempotency_key=request.idempotency_key or "",
        )
        status = 202 if payment.status == PaymentStatus.PENDING else 201
        return Response(_withdrawal_data(payment), status=status)


class WithdrawalDetailView(ApiView):
    required_scope = ApiScope.READ

    @extend_schema(responses={200: WithdrawalSerializer, 404: _ERROR, **_ERRORS})
    def get(self, request: Request, withdrawal_id: int) -> Response:
        payment = user_withdrawal(user=request.user, withdrawal_id=withdrawal_id)
        if payment is None:
            raise Http404
        return Response(_withdrawal_data(payment))
