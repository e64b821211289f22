"""REST API for quotas: members read their teams', leads adjust within what operators allow, operators set all."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from portal.access import signed_in
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
        return TeamQuota.objects.select_related("team").restrict(self.request.user)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = QuotaSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        quota = self._apply(data["team"], data["gpu_model"], data, creating=True)
        return Response(QuotaSerializer(quota).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        quota = self.get_object()
        body = QuotaSerializer(quota, data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        if {"team", "gpu_model"} & set(request.data):
            raise exceptions.ValidationError({"team": ["a quota's team and GPU model cannot change; create another"]})
        return Response(QuotaSerializer(self._apply(quota.team, quota.gpu_model, body.validated_data)).data)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.partial_update(request, *args, **kwargs)

    def _apply(self, team: Team, model: str, data: dict[str, Any], creating: bool = False) -> TeamQuota:
        changes = {k: v for k, v in data.items() if k in ("guarantee", "limit", "weight", "lendable", "lead_max_limit")}
        try:
            return services.set_quota(
                signed_in(self.request), team=team, gpu_model=model, changes=changes,
                reason=data.get("reason", ""), creating=creating,
            )  # fmt: skip
        except services.QuotaForbidden as exc:
            raise exceptions.PermissionDenied(str(exc)) from None
        except services.QuotaError as exc:
            raise exceptions.ValidationError(exc.errors) from None


# Mounted under /api/v1/ by grid/urls.py, like every app's ROUTES and PATHS.
ROUTES = [("quotas", QuotaViewSet, "quota")]
