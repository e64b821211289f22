"""Quotas, priority classes and usage history as stored; the admission scheduler reads them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from portal.models import Team
from quotas.models import PriorityClass, TeamQuota, TeamUsage


def quotas_by_team_and_model() -> dict[tuple[str, str], TeamQuota]:
    return {(q.team.slug, q.gpu_model): q for q in TeamQuota.objects.select_related("team")}


def priority_classes() -> list[PriorityClass]:
    return list(PriorityClass.objects.all())


def usage_history() -> dict[str, tuple[float, datetime]]:
    """Each team's stored decayed usage (GPU-seconds) and when it was last brought up to date."""
    return {u.team.slug: (u.gpu_seconds, u.updated_at) for u in TeamUsage.objects.select_related("team")}


def store_usage(values: Mapping[str, float], at: datetime) -> None:
    teams = dict(Team.objects.filter(slug__in=list(values)).values_list("slug", "id"))
    for slug, value in values.items():
        if slug in teams:
            TeamUsage.objects.update_or_create(team_id=teams[slug], defaults={"gpu_seconds": value, "updated_at": at})
