"""`{% job_artifacts job %}`: the job's files on its page, from artifacts.views.files_context."""

from __future__ import annotations

from typing import Any

from django import template

from artifacts import services
from artifacts.views import files_context

register = template.Library()


@register.inclusion_tag("artifacts/_files.html")
def job_artifacts(job: Any) -> dict[str, object]:
    # The page rendering this tag has already found the job through its visibility rule.
    return {"job": job, **files_context(job)}


@register.filter
def filesize(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


@register.inclusion_tag("artifacts/_team_usage.html")
def team_artifacts(team: Any, user: Any) -> dict[str, object]:
    """The team's artifact storage beside its quotas; nothing without a store or for someone outside the team."""
    if not services.configured():
        return {"usage": None}
    try:
        figure = services.usage(user, team)
    except services.StoreError as exc:
        return {"usage": None, "error": str(exc)}
    return {"team": team, "usage": figure}
