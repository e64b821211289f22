"""REST API for pools and nodes. Everyone signed in may read; only operators may act."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, permissions, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from cluster import services
from cluster.models import Node, Pool
from cluster.serializers import (
    DrainedNodeSerializer,
    NodeActionSerializer,
    NodeEventSerializer,
    NodeSerializer,
    PoolSerializer,
)
from portal.access import IsOperator


@extend_schema(tags=["cluster"])
class PoolViewSet(viewsets.ReadOnlyModelViewSet[Pool]):
    serializer_class = PoolSerializer
    queryset = Pool.objects.all()
    lookup_field = "name"
    pagination_class = None


@extend_schema(tags=["cluster"])
class NodeViewSet(viewsets.ReadOnlyModelViewSet[Node]):
    serializer_class = NodeSerializer
    queryset = Node.objects.select_related("pool")
    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    pagination_class = None

    def get_permissions(self) -> Sequence[Any]:
        if self.action in ("cordon", "drain", "resume"):
            return [permissions.IsAuthenticated(), IsOperator()]
        return super().get_permissions()

    def _act(self, request: Request, change: Any) -> Node:
        node = self.get_object()
        body = NodeActionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            changed: Node = change(node.name, request.user.get_username(), body.validated_data["reason"])
        except services.NodeActionError as exc:
            raise exceptions.ValidationError({"reason": [str(exc)]}) from None
        return changed

    @extend_schema(request=NodeActionSerializer, responses={200: NodeSerializer})
    @action(detail=True, methods=["post"])
    def cordon(self, request: Request, name: str | None = None) -> Response:
        return Response(NodeSerializer(self._act(request, services.cordon)).data)

    @extend_schema(request=NodeActionSerializer, responses={200: DrainedNodeSerializer})
    @action(detail=True, methods=["post"])
    def drain(self, request: Request, name: str | None = None) -> Response:
        """Drain the node; the answer carries the drain's report (pods a disruption budget kept, and why)."""
        node = self._act(request, services.drain)
        return Response({**NodeSerializer(node).data, "drain_report": services.last_drain_report(node)})

    @extend_schema(request=NodeActionSerializer, responses={200: NodeSerializer})
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, name: str | None = None) -> Response:
        return Response(NodeSerializer(self._act(request, services.resume)).data)

    @extend_schema(responses={200: NodeEventSerializer(many=True)})
    @action(detail=True, methods=["get"])
    def events(self, request: Request, name: str | None = None) -> Response:
        return Response(NodeEventSerializer(self.get_object().events.all()[:200], many=True).data)


# Mounted under /api/v1/ by grid/urls.py, like every app's ROUTES and PATHS.
ROUTES = [("pools", PoolViewSet, "pool"), ("nodes", NodeViewSet, "node")]
