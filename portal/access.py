"""Role helpers for views and services. Row visibility is each model's rule: `objects.restrict(user, action)` (portal/permissions.py)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest
from rest_framework import permissions

from portal.models import Membership, TeamRole, User
from portal.permissions import is_finance, is_operator

__all__ = ["IsOperator", "is_finance", "is_operator", "leads_team", "member_team_ids", "operators", "sees_all_teams", "signed_in"]


def signed_in(request: HttpRequest) -> User:
    """The request's user, for views that already require a login."""
    user = request.user
    if not isinstance(user, User):
        raise PermissionDenied("sign in first")
    return user


def member_team_ids(user: Any) -> list[int]:
    if not user.is_authenticated:
        return []
    return list(user.team_ids)


def sees_all_teams(user: Any) -> bool:
    """Operators run the grid and so see every team's jobs."""
    return is_operator(user)


def leads_team(user: Any, team_id: int) -> bool:
    if not user.is_authenticated:
        return False
    return Membership.objects.filter(user=user, team_id=team_id, role=TeamRole.LEAD).exists()


def operators() -> list[User]:
    """Everyone `is_operator` says is one (superusers too), active, to be told about the grid."""
    return list(User.objects.filter(Q(is_operator=True) | Q(is_superuser=True), is_active=True).order_by("id"))


class IsOperator(permissions.BasePermission):
    """API views for operators only."""

    message = "Only operators may do this."

    def has_permission(self, request: Any, view: Any) -> bool:
        return is_operator(request.user)
