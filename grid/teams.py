"""What a team page shows: per GPU model, guarantee, use, borrowing and lending, fair-share standing."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Sum

from cluster import services as cluster_services
from jobs.models import Job
from jobs.states import HOLDS_GPUS, WAITING
from portal.charts import stacked_bar_figure
from quotas import services as quota_services
from quotas.lending import TeamShare, lending
from quotas.models import TeamUsage

HOUR = 3600.0


@dataclass(frozen=True)
class TeamModelRow:
    team: str
    gpu_model: str
    guarantee: int
    limit: int
    weight: int
    lendable: bool
    used: int
    borrowing: int
    idle_guarantee: int
    pending_gpus: int
    borrowed_from: dict[str, float]
    lent_to: dict[str, float]
    from_unguaranteed: float
    usage_gpu_hours: float


def _gpus_by(states: frozenset[str]) -> dict[tuple[str, str], int]:
    rows = Job.objects.filter(state__in=states).values("team__slug", "gpu_model").annotate(g=Sum("gpus"))
    return {(r["team__slug"], r["gpu_model"]): r["g"] or 0 for r in rows}


def overview() -> list[TeamModelRow]:
    """Every team and GPU model with a quota or GPUs in use; the caller filters what a user may see."""
    quotas = quota_services.quotas_by_team_and_model()
    used, pending = _gpus_by(HOLDS_GPUS), _gpus_by(WAITING)
    capacity = cluster_services.capacity_by_model()
    usage = dict(TeamUsage.objects.values_list("team__slug", "gpu_seconds"))
    keys = sorted(set(quotas) | set(used))
    by_model: dict[str, list[TeamShare]] = defaultdict(list)
    for team, model in keys:
        q = quotas.get((team, model))
        guarantee, limit, lendable = (q.guarantee, q.limit, q.lendable) if q else (0, settings.DEFAULT_TEAM_GPU_LIMIT, True)
        by_model[model].append(TeamShare(team, guarantee, limit, used.get((team, model), 0), lendable))
    flows = {model: lending(shares, capacity[model].total_gpus if model in capacity else 0) for model, shares in by_model.items()}
    rows = []
    for model, shares in sorted(by_model.items()):
        flow = flows[model]
        for share in shares:
            q = quotas.get((share.team, model))
            rows.append(
                TeamModelRow(
                    team=share.team,
                    gpu_model=model,
                    guarantee=share.guarantee,
                    limit=share.limit,
                    weight=q.weight if q else 1,
                    lendable=share.lendable,
                    used=share.used,
                    borrowing=share.borrowing,
                    idle_guarantee=share.idle_guarantee,
                    pending_gpus=pending.get((share.team, model), 0),
                    borrowed_from=flow.borrowed_from.get(share.team, {}),
                    lent_to=flow.lent_to.get(share.team, {}),
                    from_unguaranteed=flow.from_unguaranteed.get(share.team, 0.0),
                    usage_gpu_hours=usage.get(share.team, 0.0) / HOUR,
                )
            )
    return rows


def charts(rows: list[TeamModelRow]) -> dict[str, Any]:
    labels = [f"{r.team} {r.gpu_model.upper()}" for r in rows]
    return {
        "shares": stacked_bar_figure(
            "GPUs: used within guarantee, borrowed, idle guarantee",
            "GPUs",
            labels,
            {
                "used within guarantee": [min(r.used, r.guarantee) for r in rows],
                "borrowed": [r.borrowing for r in rows],
                "idle guarantee": [r.idle_guarantee for r in rows],
                "waiting": [r.pending_gpus for r in rows],
            },
        ),
        "fairshare": stacked_bar_figure(
            "Fair-share standing: decayed usage per unit of weight",
            "GPU-hours / weight",
            labels,
            {"usage": [round(r.usage_gpu_hours / max(1, r.weight), 1) for r in rows]},
        ),
    }
