"""Who may see and do what. Every visibility rule of the project is built from these helpers."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from portal.models import Membership, TeamRole, User


def signed_in(request: HttpRequest) -> User:
    """The request's user, for views that already require a login."""
    user = request.user
    if not isinstance(user, User):
        raise PermissionDenied("sign in first")
    return user


def is_operator(user: Any) -> bool:
    return bool(user.is_authenticated and (user.is_operator or user.is_superuser))


def is_finance(user: Any) -> bool:
    return bool(user.is_authenticated and (user.is_finance or user.is_superuser))


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
