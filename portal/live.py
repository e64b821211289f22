"""The dashboard's figures: grid capacity, allocation and queue, now and over the last hour."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from django.db.models import Count, Sum
from django.utils import timezone

from cluster.models import GridSample, Node, Pool
from cluster.states import NodeState
from jobs import services as job_services
from jobs.models import Job
from jobs.states import HOLDS_GPUS, WAITING
from portal.access import member_team_ids, sees_all_teams
from portal.charts import Point, line_figure

HISTORY = timedelta(hours=1)


def pools_now() -> list[dict[str, Any]]:
    figures = job_services.grid_figures()
    nodes: dict[str, list[Node]] = defaultdict(list)
    for node in Node.objects.select_related("pool"):
        nodes[node.pool.name].append(node)
    rows = []
    for pool in Pool.objects.all():
        members = nodes.get(pool.name, [])
        total = sum(n.gpus for n in members)
        healthy = sum(n.gpus for n in members if n.state == NodeState.READY)
        allocated = figures["allocated"].get(pool.name, 0)
        rows.append(
            {
                "name": pool.name,
                "kind": pool.kind,
                "gpu_model": pool.gpu_model,
                "nodes": len(members),
                "gpus_total": total,
                "gpus_healthy": healthy,
                "gpus_allocated": allocated,
                "utilization": round(100 * allocated / total, 1) if total else 0.0,
                "jobs_running": figures["running"].get(pool.name, 0),
            }
        )
    return rows


def queue_now(user: Any) -> dict[str, Any]:
    waiting = Job.objects.filter(state__in=WAITING)
    totals = waiting.aggregate(jobs=Count("id"), gpus=Sum("gpus"))
    mine = waiting if sees_all_teams(user) else waiting.filter(team_id__in=member_team_ids(user))
    by_team = list(mine.values("team__slug").annotate(jobs=Count("id"), gpus=Sum("gpus")).order_by("team__slug"))
    by_model = dict(waiting.values("gpu_model").annotate(gpus=Sum("gpus")).values_list("gpu_model", "gpus"))
    models = Pool.objects.values_list("gpu_model", flat=True).distinct()
    return {
        "jobs": totals["jobs"] or 0,
        "gpus": totals["gpus"] or 0,
        "by_model": {model: by_model.get(model) or 0 for model in models},
        "by_team": [{"team": r["team__slug"], "jobs": r["jobs"], "gpus": r["gpus"] or 0} for r in by_team],
        "running": Job.objects.filter(state__in=HOLDS_GPUS).count(),
    }


def nodes_now() -> list[dict[str, Any]]:
    """Nodes with the GPUs the portal has handed out on each (what admission counts)."""
    reserved = job_services.reserved_by_node()
    return [
        {
            "name": n.name,
            "pool": n.pool.name,
            "gpu_model": n.gpu_model,
            "gpus": n.gpus,
            "gpus_used": reserved.get(n.name, 0),
            "state": n.state,
            "reason": n.reason,
        }
        for n in Node.objects.select_related("pool")
    ]


def history_charts() -> dict[str, dict[str, Any]]:
    since = timezone.now() - HISTORY
    utilization: dict[str, list[Point]] = defaultdict(list)
    queue: dict[str, list[Point]] = defaultdict(list)
    queued_models: set[tuple[str, str]] = set()
    for s in GridSample.objects.filter(at__gte=since).select_related("pool").order_by("at"):
        t = s.at.isoformat()
        utilization[s.pool.name].append((t, round(100 * s.gpus_allocated / s.gpus_total, 1) if s.gpus_total else 0.0))
        if (t, s.pool.gpu_model) not in queued_models:  # pools of one model share its queue
            queued_models.add((t, s.pool.gpu_model))
            queue[s.pool.gpu_model].append((t, s.gpus_pending))
    return {
        "utilization": line_figure("GPU allocation by pool", "% of GPUs", dict(utilization), (0, 100)),
        "queue": line_figure("Queue depth by GPU model", "pending GPUs", dict(queue)),
    }


def grid_snapshot(user: Any) -> dict[str, Any]:
    return {
        "type": "grid",
        "at": timezone.now().isoformat(),
        "pools": pools_now(),
        "queue": queue_now(user),
        "nodes": nodes_now(),
    }
