"""Reading quotas for admission."""

from __future__ import annotations

from django.conf import settings

from quotas.models import TeamQuota


def gpu_limits() -> dict[tuple[int, str], int]:
    """Hard GPU limit per (team id, GPU model); teams without a row get DEFAULT_TEAM_GPU_LIMIT."""
    return {(q.team_id, q.gpu_model): q.limit for q in TeamQuota.objects.all()}


def limit_for(limits: dict[tuple[int, str], int], team_id: int, gpu_model: str) -> int:
    return limits.get((team_id, gpu_model), settings.DEFAULT_TEAM_GPU_LIMIT)
