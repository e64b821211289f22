"""REST API for quotas: members read their teams', leads adjust within what operators allow, operators set all."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from cluster import services as cluster_services
from portal.access import is_operator, leads_team, member_team_ids, sees_all_teams, signed_in
from portal.models import Team
from quotas import services
from quotas.models import TeamQuota


class QuotaSerializer(serializers.ModelSerializer[TeamQuota]):
    team: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="slug", queryset=Team.objects.all())
    reason = serializers.CharField(write_only=True, required=False, allow_blank=True, max_length=300)

    class Meta:
        model = TeamQuota
        fields = ["id", "team", "gpu_model", "guarantee", "limit", "weight", "lendable", "lead_max_limit", "reason"]
        read_only_fields = ["id"]
        validators: list[Any] = []  # uniqueness and limits are the service's to judge, with field-named errors


@extend_schema(tags=["quotas"])
class QuotaViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet[TeamQuota],
):
    serializer_class = QuotaSerializer
    pagination_class = None
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self) -> QuerySet[TeamQuota]:
        quotas = TeamQuota.objects.select_related("team")
        user = self.request.user
        return quotas if sees_all_teams(user) else quotas.filter(team_id__in=member_team_ids(user))

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if not is_operator(request.user):
            raise exceptions.PermissionDenied("only operators create quotas")
        body = QuotaSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        quota = self._apply(body.validated_data["team"], body.validated_data["gpu_model"], body.validated_data, True)
        return Response(QuotaSerializer(quota).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        quota = self.get_object()
        operator = is_operator(request.user)
        if not (operator or leads_team(request.user, quota.team_id)):
            raise exceptions.PermissionDenied("only the team's lead or an operator may change its quota")
        body = QuotaSerializer(quota, data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        if {"team", "gpu_model"} & set(request.data):
            raise exceptions.ValidationError({"team": ["a quota's team and GPU model cannot change; create another"]})
        return Response(QuotaSerializer(self._apply(quota.team, quota.gpu_model, body.validated_data, operator)).data)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.partial_update(request, *args, **kwargs)

    def _apply(self, team: Team, model: str, data: dict[str, Any], operator: bool) -> TeamQuota:
        capacity = cluster_services.capacity_by_model().get(model)
        if capacity is None:
            raise exceptions.ValidationError({"gpu_model": [f"the grid has no {model!r} GPUs"]})
        changes = {k: v for k, v in data.items() if k in ("guarantee", "limit", "weight", "lendable", "lead_max_limit")}
        try:
            return services.set_quota(
                actor=signed_in(self.request).username, by_operator=operator, team=team, gpu_model=model,
                capacity=capacity.total_gpus, changes=changes, reason=data.get("reason", ""),
            )  # fmt: skip
        except services.QuotaError as exc:
            raise exceptions.ValidationError(exc.errors) from None
