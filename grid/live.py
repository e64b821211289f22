"""The dashboard's figures: grid capacity, allocation and queue, now and over the last hour."""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from django.db.models import Count, Sum
from django.utils import timezone

from cluster import services as cluster_services
from cluster.models import GridSample, GuardState, Node, Pool, SafeguardEvent
from cluster.states import NodeState
from cluster.telemetry import TelemetryUnavailable, get_telemetry
from cluster.telemetry.prometheus import PrometheusTelemetry
from grid.telemetry import heat
from jobs import services as job_services
from jobs.models import Job
from jobs.states import HOLDS_GPUS, WAITING
from portal.access import is_operator
from portal.charts import LAYOUT, Point, figure, line_figure, trace
from portal.permissions import VIEW, allows

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


def queue_totals() -> dict[str, Any]:
    """The grid-wide queue: the same for every viewer."""
    waiting = Job.objects.filter(state__in=WAITING)
    totals = waiting.aggregate(jobs=Count("id"), gpus=Sum("gpus"))
    by_model = dict(waiting.values("gpu_model").annotate(gpus=Sum("gpus")).values_list("gpu_model", "gpus"))
    models = Pool.objects.values_list("gpu_model", flat=True).distinct()
    return {
        "jobs": totals["jobs"] or 0,
        "gpus": totals["gpus"] or 0,
        "by_model": {model: by_model.get(model) or 0 for model in models},
        "running": Job.objects.filter(state__in=HOLDS_GPUS).count(),
    }


def queue_by_team(user: Any) -> list[dict[str, Any]]:
    """The queue of the teams this viewer may see (every team for operators)."""
    mine = Job.objects.restrict(user).filter(state__in=WAITING)
    rows = mine.values("team__slug").annotate(jobs=Count("id"), gpus=Sum("gpus")).order_by("team__slug")
    return [{"team": r["team__slug"], "jobs": r["jobs"], "gpus": r["gpus"] or 0} for r in rows]


def queue_rows() -> list[dict[str, Any]]:
    """Every team's waiting jobs, for the live dashboards to break down per viewer (`rows_visible_to`)."""
    waiting = Job.objects.filter(state__in=WAITING)
    rows = waiting.values("team_id", "team__slug").annotate(jobs=Count("id"), gpus=Sum("gpus")).order_by("team__slug")
    return [{"team_id": r["team_id"], "team": r["team__slug"], "jobs": r["jobs"], "gpus": r["gpus"] or 0} for r in rows]


def rows_visible_to(viewer: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`queue_rows()` cut to what `queue_by_team(viewer)` gives, decided in memory by the jobs' own rule."""
    rule = Job.access_rule(viewer, VIEW)
    return [
        {"team": r["team"], "jobs": r["jobs"], "gpus": r["gpus"]}
        for r in rows
        if allows(rule, SimpleNamespace(team_id=r["team_id"]))
    ]


def queue_now(user: Any) -> dict[str, Any]:
    return {**queue_totals(), "by_team": queue_by_team(user)}


def nodes_now() -> list[dict[str, Any]]:
    """Nodes with the GPUs the portal has handed out on each (what admission counts)."""
    reserved = job_services.reserved_by_node()
    guarded = set(GuardState.objects.exclude(trip="").values_list("node", flat=True))
    return [
        {
            "name": n.name,
            "pool": n.pool.name,
            "gpu_model": n.gpu_model,
            "gpus": n.gpus,
            "gpus_used": reserved.get(n.name, 0),
            "state": n.state,
            "reason": n.reason,
            "guarded": n.name in guarded,
        }
        for n in Node.objects.select_related("pool")
    ]


def safeguard_log(limit: int = 10) -> list[dict[str, Any]]:
    """The latest node safeguard events (job events stay on their job's page, for those who may see it)."""
    return [
        {"at": e.at.isoformat(), "kind": e.get_kind_display(), "node": e.node, "actor": e.actor, "reason": e.reason}
        for e in SafeguardEvent.objects.exclude(node="")[:limit]
    ]


# --- GPU heat map ---------------------------------------------------------------------------------

HEAT_METRICS: dict[str, tuple[str, str, str, tuple[float, float]]] = {
    # key in the heat message: title, unit, colour scale, colour range
    "temp": ("GPU temperature by node", "°C", "YlOrRd", (25, 95)),
    "util": ("GPU utilisation by node", "%", "Blues", (0, 100)),
}


def heatmap_figure(grid: dict[str, Any], metric: str) -> dict[str, Any]:
    """Nodes down, GPU indices across, one cell per GPU coloured by `metric` (temp or util)."""
    title, unit, scale, (low, high) = HEAT_METRICS[metric]
    nodes = grid.get("nodes", [])
    heatmap = trace(
        "heatmap",
        z=grid.get(metric, []),
        x=[f"gpu{g}" for g in range(grid.get("gpus", 0))],
        y=nodes,
        zmin=low,
        zmax=high,
        colorscale=scale,
        colorbar={"title": {"text": unit}},
        hoverongaps=False,
        xgap=2,
        ygap=2,
    )
    return figure(
        [heatmap],
        {
            **LAYOUT,
            "height": max(200, 60 + 22 * len(nodes)),
            "title": {"text": title, "font": {"size": 14}},
            "xaxis": {"type": "category"},
            "yaxis": {"type": "category", "autorange": "reversed"},
        },
    )


def telemetry_grid() -> dict[str, Any]:
    """The heat map's data now, read directly (page load, and every tick when nothing pushes it)."""
    now = timezone.now()
    source = get_telemetry()
    try:
        samples = source.heat_samples(now) if isinstance(source, PrometheusTelemetry) else source.samples(None, now)
    except TelemetryUnavailable as exc:
        return {"type": "telemetry.grid", "at": now.isoformat(), "stale": True, "why": str(exc)[:200]}
    return {"type": "telemetry.grid", "at": now.isoformat(), "stale": False, "heat": heat(samples)}


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
    grid = telemetry_grid()
    return {
        "utilization": line_figure("GPU allocation by pool", "% of GPUs", dict(utilization), (0, 100)),
        "queue": line_figure("Queue depth by GPU model", "pending GPUs", dict(queue)),
        "heatmap": {metric: heatmap_figure(grid.get("heat", {}), metric) for metric in HEAT_METRICS},
        "heat": grid,
    }


class SharedFigures:
    """What every dashboard shows alike, computed at most once per `ttl_s` per process.

    A thousand open dashboards would otherwise each run the same grid queries every tick. A change
    notice (`changed()`) makes the next reader recompute, so a transition still shows at once.
    `busy_share`: the most of the process's time the computation may take; a value that took `d`
    seconds is kept at least `d / busy_share` (the heat map of a thousand nodes takes ~1-2 s here).
    """

    def __init__(
        self,
        compute: Callable[[], dict[str, Any]],
        ttl_s: float,
        busy_share: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.compute, self.ttl_s, self.busy_share, self.clock = compute, ttl_s, busy_share, clock
        self.lock = threading.Lock()
        self.value: dict[str, Any] | None = None
        self.computed_at = self.changed_at = -math.inf
        self.kept_s = ttl_s

    def changed(self) -> None:
        self.changed_at = self.clock()

    def get(self) -> dict[str, Any]:
        with self.lock:
            now = self.clock()
            if self.value is None or now - self.computed_at >= self.kept_s or self.computed_at < self.changed_at:
                self.computed_at = now
                self.value = self.compute()
                took = self.clock() - now
                self.kept_s = max(self.ttl_s, took / self.busy_share) if self.busy_share else self.ttl_s
            return self.value


def _grid_figures() -> dict[str, Any]:
    return {"pools": pools_now(), "queue": queue_totals(), "nodes": nodes_now(), "safeguards": safeguard_log()}


shared_grid = SharedFigures(_grid_figures, ttl_s=1.0)
shared_telemetry = SharedFigures(lambda: telemetry_grid(), ttl_s=1.0, busy_share=0.25)
# The dashboard's history charts are the grid's, alike for every viewer, and move with the sampling
# cycles: built (Plotly figures, most of a dashboard request's time) at most once per 2 s per process.
shared_history = SharedFigures(history_charts, ttl_s=2.0)


UNRESOLVED_NOTE = timedelta(minutes=10)


def unresolved_note(user: Any) -> dict[str, Any] | None:
    """Host names in the telemetry of the last minutes that named no node (cluster/telemetry/hosts.py),
    for the dashboard's note; their names for operators only."""
    recent = cluster_services.recent_unresolved(timezone.now() - UNRESOLVED_NOTE)
    if not recent:
        return None
    return {"count": len(recent), "names": [r.name for r in recent[:10]] if is_operator(user) else []}


def grid_snapshot(user: Any) -> dict[str, Any]:
    return grid_message(shared_grid.get(), timezone.now().isoformat(), queue_by_team(user), is_operator(user))


def grid_message(figures: dict[str, Any], at: str, by_team: list[dict[str, Any]], can_override: bool) -> dict[str, Any]:
    """What a dashboard is sent: the shared figures and the queue of the teams its viewer may see."""
    return {
        "type": "grid",
        "at": at,
        "pools": figures["pools"],
        "queue": {**figures["queue"], "by_team": by_team},
        "nodes": figures["nodes"],
        "safeguards": figures["safeguards"],
        "can_override": can_override,
    }
