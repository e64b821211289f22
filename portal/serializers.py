from __future__ import annotations

from datetime import date
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from portal import inputs
from portal.models import ApiToken, Team

_bound: dict[type[serializers.BaseSerializer[Any]], serializers.BaseSerializer[Any]] = {}


def represent(serializer_class: type[serializers.BaseSerializer[Any]], instance: Any) -> Any:
    """`serializer_class(instance).data`, with the serializer's fields built once per process instead of on
    every call (DRF builds a ModelSerializer's fields again for each instance). Only for serializers whose
    output does not depend on a context (no request-aware fields)."""
    serializer = _bound.get(serializer_class)
    if serializer is None:
        serializer = _bound.setdefault(serializer_class, serializer_class())
    return serializer.to_representation(instance)


@extend_schema_field({"type": "string", "pattern": "^[0-9]{4}-(0[1-9]|1[0-2])$", "example": "2025-03"})
class MonthField(serializers.Field[date, str, str, Any]):
    """A month written YYYY-MM in and out; the value is the month's first day (see portal.inputs.month)."""

    def to_internal_value(self, data: Any) -> date:
        try:
            return inputs.month(str(data), self.field_name or "month")
        except inputs.BadInput as error:
            raise serializers.ValidationError(error.message) from None

    def to_representation(self, value: date) -> str:
        return f"{value:%Y-%m}"


class TeamSerializer(serializers.ModelSerializer[Team]):
    members = serializers.SerializerMethodField()

    class Meta:
        model = Team
        fields = ["slug", "name", "members"]

    def get_members(self, team: Team) -> list[dict[str, str]]:
        return [{"username": m.user.username, "role": m.role} for m in team.memberships.select_related("user")]


class ApiTokenSerializer(serializers.ModelSerializer[ApiToken]):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = ["id", "prefix", "created_at", "last_used_at", "revoked_at"]


class NewTokenSerializer(ApiTokenSerializer):
    key = serializers.CharField(read_only=True, help_text="Shown once; store it now.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "key"]


class MeSerializer(serializers.Serializer[Any]):
    username = serializers.CharField()
    is_operator = serializers.BooleanField()
    is_finance = serializers.BooleanField()
    teams = serializers.ListField(child=serializers.DictField())
