"""Output serializers of the read endpoints and the query parameters they accept."""

from __future__ import annotations

from rest_framework import serializers

from accounts.api.fields import INT64_MAX


class LimitsSerializer(serializers.Serializer):
    max_withdrawal_msat = serializers.IntegerField()
    daily_withdrawal_msat = serializers.IntegerField()
    daily_withdrawn_msat = serializers.IntegerField(
        help_text="pending and succeeded payments of the last 24 hours"
    )


class AccountSerializer(serializers.Serializer):
    uuid = serializers.UUIDField()
    username = serializers.CharField()
    balance_msat = serializers.IntegerField()
    limits = LimitsSerializer()


class BalanceSerializer(serializers.Serializer):
    balance_msat = serializers.IntegerField(help_text="spendable now")
    pending_msat = serializers.IntegerField(help_text="reserved by withdrawals in flight")


class ReferenceSerializer(serializers.Serializer):
    type = serializers.CharField()
    id = serializers.CharField()


class TransactionSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="the journal: one movement of money")
    kind = serializers.CharField()
    amount_msat = serializers.IntegerField(help_text="positive: credited; negative: debited")
    fee_msat = serializers.IntegerField(
        allow_null=True, help_text="routing fee, on the row that settled a withdrawal"
    )
    balance_after_msat = serializers.IntegerField(allow_null=True)
    reference = ReferenceSerializer(allow_null=True)
    memo = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()


class TransactionPageSerializer(serializers.Serializer):
    results = TransactionSerializer(many=True)
    next_cursor = serializers.IntegerField(
        allow_null=True, help_text="pass as `before` for older rows; null on the last page"
    )


class TransactionQuerySerializer(serializers.Serializer):
    before = serializers.IntegerField(
        required=False, min_value=1, max_value=INT64_MAX, help_text="a `next_cursor`"
    )
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200, default=50)
