"""Role helpers for views and services. Row visibility is each model's rule: `objects.restrict(user, action)` (portal/permissions.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from django.conf import settings
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


def websocket_user(scope: dict[str, Any]) -> User | None:
    """The user a websocket speaks for *now*: None once the session behind it has ended (signed out,
    expired, password changed) or the user was deactivated. Sockets call this on every tick.

    A scope without a session (in-process tests that set the user directly) is checked by user only.
    """
    from django.contrib.auth import get_user
    from django.utils.module_loading import import_string

    user = scope.get("user")
    if user is None or not user.is_authenticated:
        return None
    header = scope.get("api_token_header")
    if header is not None:  # opened with an API token (portal.security.TokenWebsocket): that token must still hold
        from portal.security import handshake_request, token_user

        current = token_user(handshake_request(scope))
        if current is None or current.pk != user.pk:
            return None
        return User.objects.filter(pk=user.pk, is_active=True).first()
    session = scope.get("session")
    if session is not None:
        if not session.session_key:
            return None
        store = import_string(f"{settings.SESSION_ENGINE}.SessionStore")(session.session_key)
        current = get_user(SimpleNamespace(session=store))  # type: ignore[arg-type]
        if not current.is_authenticated or current.pk != user.pk:
            return None
    return User.objects.filter(pk=user.pk, is_active=True).first()
