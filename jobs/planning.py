"""What-if capacity planning: replay recent real submissions through the admission policy, on the
grid as it is and as it might be (more or fewer nodes, other quotas), and compare.

An uploaded trace (the replay's CSV format, optional columns included) replaces the grid's history,
a pool spec (`a100:64x8,t4:32x4`) replaces the grid's nodes as "now" (the scenario adds nodes to its
first pool), and a class map maps the trace's priority classes, all read by the replay's own loader.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from cluster.models import Node
from jobs import admission, policy
from jobs.models import Job, WhatIfRun, WhatIfState
from jobs.policy.replay import (
    MAX_REPORTED_ERRORS,
    Pool,
    ReplaySpec,
    TraceError,
    TraceJob,
    TraceLoad,
    parse_class_map,
    parse_pools,
    read_trace,
    replay,
)
from jobs.policy.replay import MODEL as REPLAY_MODEL
from jobs.policy.replay import default_quotas as replay_default_quotas
from portal import inputs
from portal.charts import grouped_bar_figure
from portal.queue import after_commit

MAX_DAYS = 90
MAX_JOBS = 50_000
MAX_ADDED_NODES = 10_000
MAX_GPUS = 1_000_000  # a quota override beyond this is a typo, not a scenario
MAX_TRACE_BYTES = 8_000_000  # an uploaded trace; MAX_JOBS rows fit well within it
PROGRESS_STEP = 0.02
HOUR = 3600.0


class PlanningError(Exception):
    """The what-if request broke a rule; `errors` maps each field to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(str(errors))
        self.errors = errors


def start(
    user: Any,
    gpu_model: str,
    days: int,
    add_nodes: int,
    quota_overrides: Mapping[str, Any],
    trace_csv: str = "",
    pools: str = "",
    class_map: str = "",
) -> WhatIfRun:
    errors = _check(gpu_model, days, add_nodes, quota_overrides, trace_csv, pools.strip(), class_map.strip())
    if errors:
        raise PlanningError(errors)
    with transaction.atomic():
        run = WhatIfRun.objects.create(
            requested_by=user,
            gpu_model=gpu_model,
            days=days,
            add_nodes=add_nodes,
            quota_overrides=dict(quota_overrides),
            trace_csv=trace_csv,
            pools=pools.strip(),
            class_map=class_map.strip(),
        )
        after_commit("jobs.tasks.run_what_if", run.pk)
    return run


def _check(
    gpu_model: str,
    days: int,
    add_nodes: int,
    overrides: Mapping[str, Any],
    trace_csv: str = "",
    pool_spec: str = "",
    class_map: str = "",
) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    nodes = Node.objects.filter(gpu_model=gpu_model).count()
    pools: tuple[Pool, ...] | None = None
    if pool_spec:
        try:
            pools = parse_pools(pool_spec)
            nodes = pools[0].nodes
        except TraceError as exc:
            errors["pools"] = [str(exc).removeprefix("nodes: ")]
    elif not Node.objects.filter(gpu_model=gpu_model).exists():
        errors["gpu_model"] = [f"the grid has no {gpu_model!r} nodes"]
    else:
        pools = _grid_pools(gpu_model)
    try:
        mapping = parse_class_map(class_map)
    except TraceError as exc:
        errors["class_map"] = [str(exc).removeprefix("class_map: ")]
        mapping = {}
    if trace_csv and "pools" not in errors and "class_map" not in errors:
        problem = _trace_problem(trace_csv, pools, mapping)
        if problem:
            errors["trace"] = [problem]
    if not 1 <= days <= MAX_DAYS:
        errors["days"] = [f"{days} is outside 1-{MAX_DAYS}"]
    if nodes + add_nodes < 1 or add_nodes > MAX_ADDED_NODES:
        errors["add_nodes"] = [f"the scenario needs 1-{nodes + MAX_ADDED_NODES} nodes; {nodes} + {add_nodes} is outside that"]
    for team, values in overrides.items():
        if not isinstance(values, Mapping) or not {"guarantee", "limit"} <= set(values):
            errors.setdefault("quota_overrides", []).append(f"{team}: give guarantee and limit")
            continue
        try:
            guarantee = inputs.integer(values["guarantee"], f"{team}.guarantee", 0, MAX_GPUS)
            limit = inputs.integer(values["limit"], f"{team}.limit", 0, MAX_GPUS)
        except inputs.BadInput as exc:
            errors.setdefault("quota_overrides", []).append(str(exc))
            continue
        if guarantee > limit:
            errors.setdefault("quota_overrides", []).append(f"{team}: need 0 <= guarantee <= limit")
    return errors


def _grid_pools(gpu_model: str) -> tuple[Pool, ...]:
    """The grid's nodes of `gpu_model` as the replay's one pool, named after the model (a trace's `gpu_type`)."""
    nodes = Node.objects.filter(gpu_model=gpu_model)
    return (Pool(gpu_model, nodes.count(), nodes.aggregate(m=Max("gpus"))["m"] or 8),)


def _trace_problem(trace_csv: str, pools: tuple[Pool, ...] | None, class_map: Mapping[str, str]) -> str:
    if len(trace_csv.encode()) > MAX_TRACE_BYTES:
        return f"is larger than {MAX_TRACE_BYTES:,} bytes"
    try:
        loaded = _load(trace_csv, pools, class_map)
    except TraceError as exc:
        return str(exc)
    if not loaded.jobs:
        return "has no job to replay" + (f" (first bad row: {loaded.errors[0]})" if loaded.errors else "")
    if len(loaded.jobs) > MAX_JOBS:
        return f"has {len(loaded.jobs):,} jobs; at most {MAX_JOBS:,}"
    return ""


def _load(trace_csv: str, pools: tuple[Pool, ...] | None, class_map: Mapping[str, str]) -> TraceLoad:
    return read_trace(trace_csv.splitlines(), pools, class_map)


def trace(gpu_model: str, days: int, now: datetime) -> list[TraceJob]:
    """Real submissions of the last `days` days: when they came, how long they ran (or asked to), their GPUs."""
    since = now - timedelta(days=days)
    rows = (
        Job.objects.filter(gpu_model=gpu_model, submitted_at__gte=since)
        .select_related("team")
        .order_by("submitted_at")[:MAX_JOBS]
    )
    out = []
    for job in rows:
        ran = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
        duration = ran if ran and ran > 0 else float(job.walltime_s)
        out.append(TraceJob(str(job.pk), (job.submitted_at - since).total_seconds(), duration, job.gpus, job.team.slug))
    return out


def _quotas(gpu_model: str, teams: set[str], total: int, overrides: Mapping[str, Any]) -> tuple[policy.Quota, ...]:
    current = {q.team: q for q in admission.quotas({(t, gpu_model) for t in teams}) if q.gpu_model == gpu_model}
    out = []
    for team in sorted(teams):
        q = current[team]
        o = overrides.get(team, {})
        out.append(
            policy.Quota(
                team,
                REPLAY_MODEL,  # the replay's grid has one GPU model, under its own name
                min(int(o.get("guarantee", q.guarantee)), total),
                min(int(o.get("limit", q.limit)), total),
                float(o.get("weight", q.weight)),
                q.lendable,
            )
        )
    return tuple(out)


def execute(run_id: int) -> None:
    """Run both replays (the grid now, then the scenario), reporting progress as they go."""
    if not WhatIfRun.objects.filter(pk=run_id, state=WhatIfState.QUEUED).update(state=WhatIfState.RUNNING):
        return  # already taken by another worker, or finished
    run = WhatIfRun.objects.get(pk=run_id)
    try:
        result = _replay_both(run)
    except Exception as exc:
        WhatIfRun.objects.filter(pk=run_id).update(state=WhatIfState.FAILED, error=f"{type(exc).__name__}: {exc}"[:300])
        raise
    WhatIfRun.objects.filter(pk=run_id).update(state=WhatIfState.DONE, progress=1.0, result=result)


def _replay_both(run: WhatIfRun) -> dict[str, Any]:
    if run.pools or run.trace_csv:
        return _replay_both_given(run)
    jobs = trace(run.gpu_model, run.days, timezone.now())
    WhatIfRun.objects.filter(pk=run.pk).update(jobs_replayed=len(jobs))
    nodes = Node.objects.filter(gpu_model=run.gpu_model)
    per_node = nodes.aggregate(m=Max("gpus"))["m"] or 8
    now_nodes = nodes.count()
    teams = {j.team for j in jobs}
    reports = {}
    for index, (label, count, overrides) in enumerate(
        (("now", now_nodes, {}), ("scenario", now_nodes + run.add_nodes, run.quota_overrides))
    ):
        spec = ReplaySpec(
            nodes=count,
            gpus_per_node=per_node,
            quotas=_quotas(run.gpu_model, teams, count * per_node, overrides) if teams else None,
        )
        reports[label] = replay(jobs, spec, _progress_reporter(run.pk, index * 0.5))
    return {
        "now": reports["now"],
        "scenario": reports["scenario"],
        "nodes": {"now": now_nodes, "scenario": now_nodes + run.add_nodes},
    }


def _replay_both_given(run: WhatIfRun) -> dict[str, Any]:
    """An uploaded trace and/or a pool spec: the replay's loader, default quotas per pool plus the overrides."""
    pools = parse_pools(run.pools) if run.pools else _grid_pools(run.gpu_model)
    loaded = _load(run.trace_csv, pools, parse_class_map(run.class_map)) if run.trace_csv else None
    jobs = loaded.jobs if loaded else trace(run.gpu_model, run.days, timezone.now())
    WhatIfRun.objects.filter(pk=run.pk).update(jobs_replayed=len(jobs))
    first = pools[0]
    grids = {"now": pools, "scenario": (Pool(first.model, first.nodes + run.add_nodes, first.gpus_per_node), *pools[1:])}
    teams = sorted({j.team for j in jobs})
    reports = {}
    for index, (label, grid) in enumerate(grids.items()):
        overrides = run.quota_overrides if label == "scenario" else {}
        quotas = tuple(
            _override(q, overrides.get(q.team, {}), p.gpus) for p in grid for q in replay_default_quotas(teams, p.gpus, p.model)
        )
        spec = ReplaySpec(sum(p.nodes for p in grid), first.gpus_per_node, quotas=quotas or None, pools=grid)
        reports[label] = replay(jobs, spec, _progress_reporter(run.pk, index * 0.5))
    return {
        "now": reports["now"],
        "scenario": reports["scenario"],
        "nodes": {label: sum(p.nodes for p in grid) for label, grid in grids.items()},
        "pools": {label: {p.model: f"{p.nodes}x{p.gpus_per_node}" for p in grid} for label, grid in grids.items()},
        "skipped_rows": loaded.skipped_rows if loaded else 0,
        "row_errors": loaded.errors[:MAX_REPORTED_ERRORS] if loaded else [],
        "fractional_jobs_rounded": loaded.fractional_jobs_rounded if loaded else 0,
    }


def _override(quota: policy.Quota, override: Mapping[str, Any], total: int) -> policy.Quota:
    if not override:
        return quota
    return policy.Quota(
        quota.team,
        quota.gpu_model,
        min(int(override.get("guarantee", quota.guarantee)), total),
        min(int(override.get("limit", quota.limit)), total),
        float(override.get("weight", quota.weight)),
        quota.lendable,
    )


def _progress_reporter(run_id: int, offset: float) -> Any:
    last = [-1.0]

    def report(fraction: float) -> None:
        value = offset + fraction / 2
        if value - last[0] >= PROGRESS_STEP:
            last[0] = value
            WhatIfRun.objects.filter(pk=run_id, state=WhatIfState.RUNNING).update(progress=value)

    return report


def charts(result: Mapping[str, Any]) -> dict[str, Any]:
    """Waits now versus in the scenario: overall and per team, in hours."""
    runs = {"now": result["now"], "scenario": result["scenario"]}
    stats = ("mean_wait_s", "p50_wait_s", "p95_wait_s", "max_wait_s")
    teams = sorted(result["now"].get("per_team", {}))
    return {
        "waits": grouped_bar_figure(
            "Waiting time", "hours", ["mean", "p50", "p95", "max"],
            {name: [round(r[k] / HOUR, 2) for k in stats] for name, r in runs.items()},
        ),
        "teams": grouped_bar_figure(
            "Mean wait per team", "hours", teams,
            {name: [round(r["per_team"].get(t, {}).get("mean_wait_s", 0.0) / HOUR, 2) for t in teams] for name, r in runs.items()},
        ),
    }  # fmt: skip
