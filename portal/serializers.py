from __future__ import annotations

from typing import Any

from rest_framework import serializers

from portal.models import ApiToken, Team


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
