"""REST API for bursts, mounted at /api/v1/bursting/: operators read proposals and decide them; others get 403."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, permissions, serializers, viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response

from bursting import services
from bursting.models import BurstProposal, InstanceType
from portal.access import IsOperator


class InstanceTypeSerializer(serializers.ModelSerializer[InstanceType]):
    class Meta:
        model = InstanceType
        fields = ["name", "gpu_model", "gpus", "price_per_hour", "pool", "active"]


class BurstSerializer(serializers.ModelSerializer[BurstProposal]):
    instance_type = serializers.CharField(source="instance_type.name")
    policy = serializers.CharField(source="policy.name")

    class Meta:
        model = BurstProposal
        fields = [
            "id", "policy", "state", "instance_type", "pool", "gpus_per_node", "price_per_hour", "nodes", "duration_s",
            "projected_cost", "approved_nodes", "approved_duration_s", "approved_cost", "projection", "trigger",
            "created_at", "expires_at", "decided_at", "decided_by", "decision_reason", "active_at", "ends_at", "ended_at", "error",
        ]  # fmt: skip


class ApproveSerializer(serializers.Serializer[Any]):
    nodes = serializers.IntegerField(required=False, min_value=1)
    max_hours = serializers.DecimalField(required=False, max_digits=8, decimal_places=2)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=300)


class RejectSerializer(serializers.Serializer[Any]):
    reason = serializers.CharField(max_length=300)


@extend_schema(tags=["bursting"])
class InstanceTypeViewSet(viewsets.ReadOnlyModelViewSet[InstanceType]):
    serializer_class = InstanceTypeSerializer
    queryset = InstanceType.objects.all()
    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    permission_classes = [permissions.IsAuthenticated, IsOperator]
    pagination_class = None


@extend_schema(tags=["bursting"])
class BurstViewSet(viewsets.ReadOnlyModelViewSet[BurstProposal]):
    serializer_class = BurstSerializer
    queryset = BurstProposal.objects.select_related("instance_type", "policy")
    permission_classes = [permissions.IsAuthenticated, IsOperator]

    def _decide(self, request: Request, decide: Any, body: serializers.Serializer[Any]) -> Response:
        burst = self.get_object()
        body.is_valid(raise_exception=True)
        try:
            decided = decide(request.user, burst.pk, **body.validated_data)
        except services.BurstActionError as exc:
            raise exceptions.ValidationError({"detail": [str(exc)]}) from None
        return Response(BurstSerializer(decided).data)

    @extend_schema(request=ApproveSerializer, responses={200: BurstSerializer})
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str | None = None) -> Response:
        return self._decide(request, services.approve, ApproveSerializer(data=request.data))

    @extend_schema(request=RejectSerializer, responses={200: BurstSerializer})
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str | None = None) -> Response:
        return self._decide(request, services.reject, RejectSerializer(data=request.data))


class PowerSerializer(serializers.Serializer[Any]):
    nodes = serializers.ListField(
        child=serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", max_length=64),
        min_length=1,
        max_length=1000,
        help_text="Slurm node names, the host list ResumeProgram or SuspendProgram was given, expanded.",
    )


class PowerAnswerSerializer(serializers.Serializer[Any]):
    done = serializers.ListField(child=serializers.CharField())
    refused = serializers.DictField(child=serializers.CharField(), help_text="node -> why the portal refused it")


def _power(request: Request, act: str) -> Response:
    if settings.CLUSTER_BACKEND != "slurm":
        raise exceptions.ValidationError(
            {"nodes": [f"power-save nodes are Slurm's; CLUSTER_BACKEND is {settings.CLUSTER_BACKEND!r}"]}
        )
    body = PowerSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    answer = services.slurm_power(request.user, act, body.validated_data["nodes"])
    return Response({"done": answer.done, "refused": answer.refused})


@extend_schema(tags=["bursting"], request=PowerSerializer, responses={200: PowerAnswerSerializer})
@api_view(["POST"])
@permission_classes([permissions.IsAuthenticated, IsOperator])
def slurm_resume(request: Request) -> Response:
    """Slurm's ResumeProgram: start instances behind the named power-save nodes an approved burst holds."""
    return _power(request, "resume")


@extend_schema(tags=["bursting"], request=PowerSerializer, responses={200: PowerAnswerSerializer})
@api_view(["POST"])
@permission_classes([permissions.IsAuthenticated, IsOperator])
def slurm_suspend(request: Request) -> Response:
    """Slurm's SuspendProgram: terminate the instances behind the named power-save nodes."""
    return _power(request, "suspend")


# Mounted under /api/v1/ by grid/urls.py, like every app's ROUTES and PATHS.
ROUTES = [
    ("bursting/bursts", BurstViewSet, "burst"),
    ("bursting/instance-types", InstanceTypeViewSet, "instance-type"),
]
PATHS = [
    path("bursting/slurm/resume/", slurm_resume, name="burst_slurm_resume"),
    path("bursting/slurm/suspend/", slurm_suspend, name="burst_slurm_suspend"),
]
