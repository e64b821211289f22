"""REST API for the signed-in user, teams and API tokens."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import api_view
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from portal.access import signed_in
from portal.models import ApiToken, Membership, Team
from portal.serializers import ApiTokenSerializer, MeSerializer, NewTokenSerializer, TeamSerializer
from portal.tokens import revoke


def visible_teams(user: Any) -> QuerySet[Team]:
    """Operators see every team; others see the teams they belong to (Team's rule)."""
    return Team.objects.restrict(user)


@extend_schema(tags=["teams"])
@extend_schema_view(retrieve=extend_schema(parameters=[OpenApiParameter("slug", str, OpenApiParameter.PATH)]))
class TeamViewSet(viewsets.ReadOnlyModelViewSet[Team]):
    serializer_class = TeamSerializer
    lookup_field = "slug"
    pagination_class = None

    def get_queryset(self) -> QuerySet[Team]:
        return visible_teams(self.request.user)


@extend_schema(tags=["tokens"])
@extend_schema_view(destroy=extend_schema(parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH)]))
class ApiTokenViewSet(
    mixins.ListModelMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet[ApiToken]
):
    """Your own API tokens: create (the key is shown once), list, revoke."""

    serializer_class = ApiTokenSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[ApiToken]:
        return ApiToken.objects.filter(user=signed_in(self.request), revoked_at__isnull=True).order_by("-created_at")

    @extend_schema(responses={201: NewTokenSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if isinstance(request.auth, ApiToken):
            raise PermissionDenied(
                "A token cannot create tokens: sign in (the Tokens page, or a session) to create one, "
                "so that revoking a leaked token ends its access."
            )
        body = ApiTokenSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        token, key = ApiToken.issue(signed_in(request), body.validated_data["name"])
        data = {**ApiTokenSerializer(token).data, "key": key}
        return Response(data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: ApiToken) -> None:
        revoke(signed_in(self.request), instance.pk)


@extend_schema(tags=["me"], responses={200: MeSerializer})
@api_view(["GET"])
def me(request: Request) -> Response:
    memberships = Membership.objects.filter(user=signed_in(request)).select_related("team")
    return Response(
        {
            "username": request.user.get_username(),
            "is_operator": bool(getattr(request.user, "is_operator", False)),
            "is_finance": bool(getattr(request.user, "is_finance", False)),
            "teams": [{"slug": m.team.slug, "role": m.role} for m in memberships],
        }
    )


# Mounted under /api/v1/ by grid/urls.py, like every app's ROUTES and PATHS.
ROUTES = [("teams", TeamViewSet, "team"), ("tokens", ApiTokenViewSet, "token")]
PATHS = [path("me/", me, name="api_me")]
