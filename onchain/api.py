"""REST endpoints of on-chain money under /api/v1/onchain/. Thin: parse, call one service or
selector, render. Auth, scopes, rate limit and the error shape come from accounts.api."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api.fields import INT64_MAX, StrictSerializer
from accounts.api.idempotency import idempotent
from accounts.api.views import ApiView
from accounts.models import ApiScope
from onchain import selectors, services
from onchain.models import OnchainDeposit, OnchainWithdrawal

_ERROR = OpenApiResponse(description='{"error": {"code", "message", "details"}}')
_ERRORS = {401: _ERROR, 403: _ERROR, 429: _ERROR}


@extend_schema_field(OpenApiTypes.INT64)
class SatField(serializers.Field):
    """An amount in satoshi: a JSON integer, nothing else (no float, string or boolean)."""

    default_error_messages = {
        "invalid": "Must be an integer number of satoshi (not a string, float or boolean).",
        "min_value": "Must be at least 1 sat.",
        "max_value": "Must be at most {max_value} sat.",
    }

    def to_internal_value(self, data: object) -> int:
        if type(data) is not int:
            self.fail("invalid")
        if data < 1:
            self.fail("min_value")
        upper = min(settings.API_AMOUNT_MAX_MSAT, INT64_MAX) // 1000
        if data > upper:
            self.fail("max_value", max_value=upper)
        return data

    def to_representation(self, value: int) -> int:
        return int(value)


class WithdrawalRequestSerializer(StrictSerializer):
    address = serializers.CharField(max_length=200, trim_whitespace=True, allow_blank=True)
    amount_sat = SatField()


class WithdrawalSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    status = serializers.CharField()
    address = serializers.CharField()
    amount_sat = serializers.IntegerField()
    fee_reserve_msat = serializers.IntegerField(help_text="held until the batch is broadcast")
    fee_msat = serializers.IntegerField(
        allow_null=True, help_text="your share of the transaction fee, once broadcast"
    )
    txid = serializers.SerializerMethodField()
    confirmations = serializers.SerializerMethodField()
    failure_reason = serializers.CharField()
    created_at = serializers.DateTimeField()

    def get_txid(self, withdrawal: OnchainWithdrawal) -> str | None:
        batch = withdrawal.batch
        return batch.txid if batch is not None and batch.txid else None

    def get_confirmations(self, withdrawal: OnchainWithdrawal) -> int:
        batch = withdrawal.batch
        return batch.confirmations if batch is not None and batch.txid else 0


class DepositAddressSerializer(serializers.Serializer):
    address = serializers.CharField()
    created_at = serializers.DateTimeField()


class DepositSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    address = serializers.CharField(source="deposit_address.address")
    txid = serializers.CharField()
    vout = serializers.IntegerField()
    amount_sat = serializers.IntegerField()
    confirmations = serializers.IntegerField()
    confirmations_required = serializers.SerializerMethodField()
    status = serializers.CharField(help_text="pending, credited or dropped")
    first_seen_at = serializers.DateTimeField()
    credited_at = serializers.DateTimeField(allow_null=True)

    def get_confirmations_required(self, deposit: OnchainDeposit) -> int:
        return settings.ONCHAIN_DEPOSIT_CONFIRMATIONS


class ListQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200, default=50)


class WithdrawalsView(ApiView):
    def get_permissions(self):
        self.required_scope = ApiScope.SEND if self.request.method == "POST" else ApiScope.READ
        return super().get_permissions()

    @extend_schema(
        request=WithdrawalRequestSerializer,
        responses={202: WithdrawalSerializer, 400: _ERROR, 409: _ERROR, **_ERRORS},
        description="Queue an on-chain withdrawal; it is sent in the next batch transaction. "
        "Amount and fee reserve are held at once. Requires an Idempotency-Key header.",
    )
    @idempotent(required=True)
    def post(self, request: Request) -> Response:
        body = WithdrawalRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        withdrawal = services.withdrawal_request(
            user=request.user,
            address=body.validated_data["address"],
            amount_sat=body.validated_data["amount_sat"],
            idempotency_key=request.idempotency_key,
        )
        return Response(WithdrawalSerializer(withdrawal).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=[ListQuerySerializer],
        responses={200: WithdrawalSerializer(many=True), **_ERRORS},
    )
    def get(self, request: Request) -> Response:
        query = ListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = selectors.withdrawals_for_user(
            user=request.user, limit=query.validated_data["limit"]
        )
        return Response({"results": WithdrawalSerializer(rows, many=True).data})


class WithdrawalView(ApiView):
    @extend_schema(responses={200: WithdrawalSerializer, 404: _ERROR, **_ERRORS})
    def get(self, request: Request, public_id) -> Response:
        try:
            withdrawal = selectors.withdrawal_for_user(user=request.user, public_id=public_id)
        except OnchainWithdrawal.DoesNotExist:
            raise NotFound() from None
        return Response(WithdrawalSerializer(withdrawal).data)


class DepositAddressView(ApiView):
    required_scope = ApiScope.RECEIVE

    @extend_schema(
        request=None,
        responses={200: DepositAddressSerializer, 503: _ERROR, **_ERRORS},
        description="An address to deposit to: the same one until funds arrive on it.",
    )
    def post(self, request: Request) -> Response:
        address = services.deposit_address_get(user=request.user)
        return Response(DepositAddressSerializer(address).data)


class DepositsView(ApiView):
    @extend_schema(
        parameters=[ListQuerySerializer],
        responses={200: DepositSerializer(many=True), **_ERRORS},
    )
    def get(self, request: Request) -> Response:
        query = ListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = selectors.deposits_for_user(user=request.user, limit=query.validated_data["limit"])
        return Response({"results": DepositSerializer(rows, many=True).data})
