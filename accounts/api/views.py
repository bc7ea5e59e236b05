"""Read endpoints of /api/v1/. Thin: parse, call selectors, render."""

from __future__ import annotations

from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api import serializers
from accounts.api.errors import json_not_found
from accounts.models import ApiScope
from accounts.selectors import user_statement, withdrawal_allowance
from ledger.selectors import user_balance_msat, user_pending_msat

_ERROR = OpenApiResponse(description='{"error": {"code", "message", "details"}}')
_ERRORS = {401: _ERROR, 403: _ERROR, 429: _ERROR}


class ApiView(APIView):
    """Base of every API view: API-key auth, `required_scope`, per-key rate limit, our error
    shape (all from REST_FRAMEWORK settings)."""

    required_scope: str | None = ApiScope.READ


class AccountView(ApiView):
    @extend_schema(responses={200: serializers.AccountSerializer, **_ERRORS})
    def get(self, request: Request) -> Response:
        user = request.user
        allowance = withdrawal_allowance(user=user)
        data = {
            "uuid": user.uuid,
            "username": user.username,
            "balance_msat": allowance.balance_msat,
            "limits": {
                "max_withdrawal_msat": allowance.limits.max_withdrawal_msat,
                "daily_withdrawal_msat": allowance.limits.daily_withdrawal_msat,
                "daily_withdrawn_msat": allowance.withdrawn_today_msat,
            },
        }
        return Response(serializers.AccountSerializer(data).data)


class BalanceView(ApiView):
    @extend_schema(responses={200: serializers.BalanceSerializer, **_ERRORS})
    def get(self, request: Request) -> Response:
        data = {
            "balance_msat": user_balance_msat(user=request.user),
            "pending_msat": user_pending_msat(user=request.user),
        }
        return Response(serializers.BalanceSerializer(data).data)


class TransactionsView(ApiView):
    @extend_schema(
        parameters=[serializers.TransactionQuerySerializer],
        responses={200: serializers.TransactionPageSerializer, 400: _ERROR, **_ERRORS},
    )
    def get(self, request: Request) -> Response:
        query = serializers.TransactionQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        statement = user_statement(
            user=request.user,
            before=query.validated_data.get("before"),
            limit=query.validated_data["limit"],
        )
        rows = [
            {
                "id": row.id,
                "kind": row.kind,
                "amount_msat": row.amount_msat,
                "fee_msat": row.fee_msat,
                "balance_after_msat": row.balance_after_msat,
                "reference": (
                    {"type": row.reference_type, "id": row.reference_id}
                    if row.reference_type
                    else None
                ),
                "memo": row.memo,
                "created_at": row.created_at,
            }
            for row in statement.rows
        ]
        page = {"results": rows, "next_cursor": statement.next_cursor}
        return Response(serializers.TransactionPageSerializer(page).data)


@csrf_exempt
def api_not_found(request, *args, **kwargs):
    """Any /api/ path that matches no endpoint, whatever the method: JSON 404 (also with
    DEBUG on; exempt from CSRF, which would otherwise answer a POST with an HTML 403)."""
    return json_not_found(request)
