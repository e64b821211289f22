"""Who sees which team's costs: finance sees every team, a team lead their own teams, nobody else any.

Every billing page, API endpoint and export asks these helpers (and the `visible_to` querysets on
Invoice and Budget, which apply the same rule).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet

from portal.access import is_finance
from portal.models import Team, TeamRole


def billing_teams(user: Any) -> QuerySet[Team]:
    if not user.is_authenticated:
        return Team.objects.none()
    if is_finance(user):
        return Team.objects.all()
    return Team.objects.filter(memberships__user=user, memberships__role=TeamRole.LEAD)


def may_see_billing(user: Any) -> bool:
    return bool(is_finance(user) or billing_teams(user).exists())


def require_billing(user: Any) -> None:
    """Researchers and people outside billing get a plain refusal, not an empty page."""
    if not may_see_billing(user):
        raise PermissionDenied("billing is for finance and team leads")


def require_finance(user: Any) -> None:
    if not is_finance(user):
        raise PermissionDenied("only finance may do this")
