"""Strict fields for money and a serializer that refuses unknown fields."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

INT64_MAX = 2**63 - 1


@extend_schema_field(OpenApiTypes.INT64)
class MsatField(serializers.Field):
    """An amount in millisatoshi: a JSON integer, nothing else. Refuses floats (1.5, even
    1.0), strings ("100"), booleans and anything outside [min_value, max_value]; max_value is
    at most settings.API_AMOUNT_MAX_MSAT and 2^63-1 (the database's BIGINT)."""

    default_error_messages = {
        "invalid": "Must be an integer number of millisatoshi (not a string, float or boolean).",
        "min_value": "Must be at least {min_value} msat.",
        "max_value": "Must be at most {max_value} msat.",
    }

    def __init__(self, *, min_value: int = 1, max_value: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.min_value = min_value
        self.max_value = max_value

    def _upper_bound(self) -> int:
        bound = min(settings.API_AMOUNT_MAX_MSAT, INT64_MAX)
        return bound if self.max_value is None else min(bound, self.max_value)

    def to_internal_value(self, data: object) -> int:
        if type(data) is not int:  # bool is a subclass of int: refused by `type() is`
            self.fail("invalid")
        if data < self.min_value:
            self.fail("min_value", min_value=self.min_value)
        upper = self._upper_bound()
        if data > upper:
            self.fail("max_value", max_value=upper)
        return data

    def to_representation(self, value: int) -> int:
        return int(value)


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know (a typo such as `ammount_msat` must not be ignored)."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)
