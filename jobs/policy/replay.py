"""Discrete-event replay of a job trace through the admission policy, for benchmarks and what-ifs.

The replay drives the very `run_cycle` (or `fifo_cycle`) the portal runs: after every instant at
which jobs arrive or finish, one admission cycle runs on the simulated grid and its decisions are
applied. Jobs run for their traced duration, which is also their walltime (the estimate the policy
backfills with). A preempted job loses the work since its last checkpoint (one every
`checkpoint_interval_s` of run time), goes back to the queue with its original submit time, and
resumes from that checkpoint.

Shapes: a job of up to one node's GPUs runs on one node; a larger one takes whole nodes, rounded up
(20 GPUs on 8-GPU nodes take 3 nodes, and the 24 GPUs count as used).

Figures per policy (all times in seconds): `wait` is the total time a job spent pending (first wait
plus any wait after a preemption); `jct` is completion minus submission; `utilization` is GPU-seconds
held by running jobs (lost work included) over total GPUs x makespan; `limit_violations` counts every
time the simulator, checking independently of the policy, found a team above its limit, a node
given more GPUs than it had, or a job admitted that was not pending. Fairness: a team's slowdown is
its jobs' total time in system over their total run time (1 = never waited); `jain_slowdown` is
Jain's index over the teams' slowdowns (1 = all teams slowed alike, 1/n = one team takes all the
delay); `small_team_wait_ratio` is the mean wait of jobs from teams with below-median demand over the
mean wait of all jobs (below 1: small teams are not crowded out).

Traces may carry more columns, all optional: `gpu_type` (the pool a job runs in; `--nodes` takes a
pool spec like `a100:64x8,t4:32x4`), `priority_class` (any names, mapped to the portal's classes by
`--class-map LS=critical,BE=preemptible`), `user` (the team when `team` is empty) and `gpu_fraction`
(part of one GPU: one slice of the smallest shared pool of that GPU that gives at least as much,
e.g. `a100:32x8,a100-1g.10gb:8x56`, else rounded up to a whole GPU). Bad rows are reported with their line and skipped, or
refused with `--strict`. See docs/scheduler.md, "Trace replay".

Run: `python -m jobs.policy.replay TRACE.csv --nodes 96 --gpus-per-node 8 --policy fair --baseline fifo`
or the same through `manage.py replay_trace`.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from cluster.gpus import GPU_MODELS, shared_model_for
from jobs.policy.cycle import run_cycle
from jobs.policy.fairshare import advance_usage
from jobs.policy.fifo import fifo_cycle
from jobs.policy.model import (
    DEFAULT_CLASSES,
    Cluster,
    CycleResult,
    NodeState,
    PendingJob,
    PolicyConfig,
    Quota,
    Reservation,
    RunningJob,
)
from jobs.policy.shadow import FifoShadow

MODEL, POOL = "gpu", "replay"
POLICIES = ("fair", "fifo")
CLASSES = tuple(c.name for c in DEFAULT_CLASSES)  # the portal's priority classes
DEFAULT_CLASS = "standard"
DEFAULT_TEAM = "default"  # the team of a row with neither team nor user
REQUIRED_COLUMNS = ("job_id", "submit_time_s", "duration_s", "num_gpus")
MAX_POOL_NODES = 1_000_000
SHARED_MODELS = frozenset(key for key, model in GPU_MODELS.items() if model.shares)
MAX_GPUS_PER_NODE = 1024
MAX_REPORTED_ERRORS = 20


class TraceError(ValueError):
    """A trace or a replay option that cannot be used; the message names the field (and line)."""


@dataclass(frozen=True, slots=True)
class Pool:
    """One GPU model of the simulated grid: `nodes` nodes of `gpus_per_node` GPUs each."""

    model: str
    nodes: int
    gpus_per_node: int

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One row of a trace: `job_id, submit_time_s, duration_s, num_gpus, team`, and the optional columns.

    `gpu_type` empty = the grid's default (first) pool; `priority` is a portal class, `priority_class`
    the trace's own name for it (empty when the trace has none); `gpu_fraction` is what the row asked
    for when it wanted part of one GPU (the job runs on a whole one).
    """

    id: str
    submit_time: float
    duration: float
    gpus: int
    team: str
    gpu_type: str = ""
    priority: str = DEFAULT_CLASS
    priority_class: str = ""
    user: str = ""
    gpu_fraction: float | None = None


@dataclass(frozen=True, slots=True)
class TraceLoad:
    """A read trace: the good jobs, the bad rows' errors (line: field: why), and what was adjusted."""

    jobs: list[TraceJob]
    errors: list[str]
    fractional_jobs_rounded: int = 0

    @property
    def skipped_rows(self) -> int:
        return len(self.errors)


@dataclass(frozen=True, slots=True)
class ReplaySpec:
    """The simulated grid and policy settings of one replay."""

    nodes: int
    gpus_per_node: int
    policy: str = "fair"
    checkpoint_interval_s: float = 1800.0
    quotas: tuple[Quota, ...] | None = None
    config: PolicyConfig = field(default_factory=lambda: PolicyConfig(explain=False))
    pools: tuple[Pool, ...] = ()  # several GPU models; empty: one pool of `nodes` x `gpus_per_node`

    @property
    def grid(self) -> tuple[Pool, ...]:
        return self.pools or (Pool(MODEL, self.nodes, self.gpus_per_node),)


def parse_pools(spec: str | int, gpus_per_node: int = 8) -> tuple[Pool, ...]:
    """`--nodes`: a node count (of `gpus_per_node` GPUs, one pool) or a pool spec `a100:64x8,t4:32x4`.

    The first pool is the default model, the one a row with an empty `gpu_type` runs on.
    """
    text = str(spec).strip()
    if text.isdigit():
        nodes = int(text)
        if not 1 <= nodes <= MAX_POOL_NODES:
            raise TraceError(f"nodes: {nodes} is outside 1-{MAX_POOL_NODES}")
        if not 1 <= gpus_per_node <= MAX_GPUS_PER_NODE:
            raise TraceError(f"gpus_per_node: {gpus_per_node} is outside 1-{MAX_GPUS_PER_NODE}")
        return (Pool(MODEL, nodes, gpus_per_node),)
    pools: list[Pool] = []
    for part in text.split(","):
        model, colon, size = part.strip().partition(":")
        count, x, per_node = size.strip().lower().partition("x")
        model = model.strip()
        if not colon or not x or not model or not count.strip().isdigit() or not per_node.strip().isdigit():
            raise TraceError(f"nodes: {part.strip()!r} is not MODEL:NODESxGPUS (like a100:64x8), nor a node count")
        if any(p.model == model for p in pools):
            raise TraceError(f"nodes: GPU model {model!r} is given twice")
        nodes, per = int(count), int(per_node)
        if not 1 <= nodes <= MAX_POOL_NODES:
            raise TraceError(f"nodes: {model}: {nodes} nodes is outside 1-{MAX_POOL_NODES}")
        if not 1 <= per <= MAX_GPUS_PER_NODE:
            raise TraceError(f"nodes: {model}: {per} GPUs per node is outside 1-{MAX_GPUS_PER_NODE}")
        pools.append(Pool(model, nodes, per))
    return tuple(pools)


def parse_class_map(spec: str | None) -> dict[str, str]:
    """`--class-map LS=critical,BE=preemptible`: trace class names to the portal's classes."""
    mapping: dict[str, str] = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        name, equals, target = (s.strip() for s in part.partition("="))
        if not equals or not name:
            raise TraceError(f"class_map: {part.strip()!r} is not NAME=CLASS")
        if target not in CLASSES:
            raise TraceError(f"class_map: {name}={target}: the class must be one of {', '.join(CLASSES)}")
        if mapping.get(name, target) != target:
            raise TraceError(f"class_map: {name} is mapped twice")
        mapping[name] = target
    return mapping


def load_trace(path: str | Path) -> list[TraceJob]:
    """Every job of a trace, refusing it at its first bad row (`read_trace` skips and reports them)."""
    return read_trace(path, strict=True).jobs


def read_trace(
    source: str | Path | Iterable[str],
    pools: Sequence[Pool] | None = None,
    class_map: Mapping[str, str] | None = None,
    strict: bool = False,
) -> TraceLoad:
    """Read a CSV trace (a path, or its lines): required `job_id, submit_time_s, duration_s, num_gpus`;
    optional `team, user, gpu_type, priority_class, gpu_fraction`; other columns are ignored.

    A bad row is skipped and reported as `line N: field: why`; with `strict`, the first bad rows raise
    `TraceError`. With `pools`, a row whose `gpu_type` has no pool, or that asks for more GPUs than its
    pool holds, is bad. A `priority_class` neither a portal class nor in `class_map` refuses the trace.
    """
    if isinstance(source, (str, Path)):
        with open(source, newline="") as handle:
            return _read_rows(handle, pools, class_map or {}, strict)
    return _read_rows(source, pools, class_map or {}, strict)


def _read_rows(lines: Iterable[str], pools: Sequence[Pool] | None, class_map: Mapping[str, str], strict: bool) -> TraceLoad:
    reader = csv.DictReader(lines)
    columns = [c.strip() for c in reader.fieldnames or []]
    reader.fieldnames = columns
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise TraceError(f"trace: missing column(s) {', '.join(missing)} (has: {', '.join(columns) or 'none'})")
    by_model = {p.model: p for p in pools or ()}
    default = pools[0] if pools else None
    jobs: list[TraceJob] = []
    errors: list[str] = []
    seen: set[str] = set()
    unmapped: dict[str, int] = {}
    rounded = 0
    for row in reader:
        line = reader.line_num
        try:
            job = _row(row, by_model, default, class_map, seen)
        except _BadRow as exc:
            errors.append(f"line {line}: {exc}")
            if strict and len(errors) >= MAX_REPORTED_ERRORS:
                break
            continue
        except _Unmapped as exc:
            unmapped[str(exc.args[0])] = unmapped.get(str(exc.args[0]), 0) + 1
            continue
        seen.add(job.id)
        jobs.append(job)
        rounded += job.gpu_fraction is not None and job.gpu_fraction < 1 and job.gpu_type not in SHARED_MODELS
    if unmapped:
        names = ", ".join(f"{name!r} ({count} rows)" for name, count in sorted(unmapped.items()))
        raise TraceError(
            f"priority_class: {names} not mapped to a portal class; map them with --class-map NAME=CLASS "
            f"(classes: {', '.join(CLASSES)})"
        )
    if strict and errors:
        raise TraceError(
            f"trace: {len(errors)}{'+' if len(errors) >= MAX_REPORTED_ERRORS else ''} bad row(s):\n" + "\n".join(errors)
        )
    return TraceLoad(jobs, errors, rounded)


class _BadRow(Exception):
    pass


class _Unmapped(Exception):
    pass


def _number(row: Mapping[str, str | None], name: str) -> float:
    text = (row.get(name) or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise _BadRow(f"{name}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise _BadRow(f"{name}: {text!r} must be a finite number >= 0")
    return value


def _row(
    row: Mapping[str, str | None],
    pools: Mapping[str, Pool],
    default: Pool | None,
    class_map: Mapping[str, str],
    seen: set[str],
) -> TraceJob:
    job_id = (row.get("job_id") or "").strip()
    if not job_id:
        raise _BadRow("job_id: empty")
    if job_id in seen:
        raise _BadRow(f"job_id: {job_id!r} appears twice")
    submit, duration = _number(row, "submit_time_s"), _number(row, "duration_s")
    text = (row.get("num_gpus") or "").strip()
    try:
        gpus = int(text)
    except ValueError:
        raise _BadRow(f"num_gpus: {text!r} is not a whole number") from None
    if gpus < 1:
        raise _BadRow(f"num_gpus: {gpus} must be at least 1")
    fraction_text = (row.get("gpu_fraction") or "").strip()
    fraction = None
    if fraction_text:
        try:
            fraction = float(fraction_text)
        except ValueError:
            raise _BadRow(f"gpu_fraction: {fraction_text!r} is not a number") from None
        if not 0 < fraction <= 1:
            raise _BadRow(f"gpu_fraction: {fraction_text} is outside (0, 1]")
        if gpus != 1:
            raise _BadRow(f"gpu_fraction: a fraction needs num_gpus 1, not {gpus}")
    gpu_type = (row.get("gpu_type") or "").strip()
    pool = pools.get(gpu_type) if gpu_type else default
    if pools and pool is None:
        raise _BadRow(f"gpu_type: no pool for {gpu_type!r} (pools: {', '.join(pools)})")
    if fraction is not None and fraction < 1 and pool is not None:
        # Part of a GPU runs on one slice of a shared pool of that GPU (`a100-1g.10gb:8x56`), when the grid has one.
        shared = shared_model_for(pool.model, Fraction(fraction).limit_denominator(1000), set(pools))
        if shared is not None:
            gpu_type, pool = shared.key, pools[shared.key]
    if pool is not None and shape(gpus, pool.gpus_per_node)[1] > pool.nodes:
        raise _BadRow(f"num_gpus: {gpus} is more than pool {pool.model!r} can ever hold ({pool.nodes}x{pool.gpus_per_node})")
    name = (row.get("priority_class") or "").strip()
    priority = class_map.get(name, name if name in CLASSES else "") if name else DEFAULT_CLASS
    if not priority:
        raise _Unmapped(name)
    user = (row.get("user") or "").strip()
    team = (row.get("team") or "").strip() or user or DEFAULT_TEAM
    return TraceJob(job_id, submit, duration, gpus, team, gpu_type, priority, name, user, fraction)


def default_quotas(teams: Sequence[str], total_gpus: int, model: str = MODEL) -> tuple[Quota, ...]:
    """Equal guarantees that add up to at most the pool, and the whole pool as every team's limit."""
    distinct = sorted(set(teams))
    share = total_gpus // max(1, len(distinct))
    return tuple(Quota(team, model, share, total_gpus) for team in distinct)


def load_quotas(path: str | Path, models: Sequence[str] = (MODEL,)) -> tuple[Quota, ...]:
    """JSON: {"team": {"guarantee": 64, "limit": 768, "weight": 1, "lendable": true}, ...}, the same in every pool."""
    data = json.loads(Path(path).read_text())
    return tuple(
        Quota(team, model, int(q["guarantee"]), int(q["limit"]), float(q.get("weight", 1.0)), bool(q.get("lendable", True)))
        for model in models
        for team, q in data.items()
    )


def shape(gpus: int, gpus_per_node: int) -> tuple[int, int]:
    """(GPUs per node, nodes): one node if it fits, else whole nodes rounded up."""
    if gpus <= gpus_per_node:
        return gpus, 1
    return gpus_per_node, math.ceil(gpus / gpus_per_node)


class _Simulation:
    """The grid, the queue and the clock of one replay."""

    def __init__(self, trace: Sequence[TraceJob], spec: ReplaySpec) -> None:
        self.spec = spec
        self.trace = {job.id: job for job in trace}
        grid = spec.grid
        pools = {p.model: p for p in grid}
        # Each job's model and shape (GPUs per node, nodes) in its pool; an empty gpu_type is the first pool.
        self.model = {j.id: j.gpu_type or grid[0].model for j in trace}
        unknown = sorted({m for m in self.model.values() if m not in pools})
        if unknown:
            raise TraceError(f"gpu_type: no pool for {', '.join(unknown)} (pools: {', '.join(pools)})")
        self.shapes = {j.id: shape(j.gpus, pools[self.model[j.id]].gpus_per_node) for j in trace}
        self.total_gpus = sum(p.gpus for p in grid)
        teams = [j.team for j in trace]
        self.quotas = spec.quotas or tuple(q for p in grid for q in default_quotas(teams, p.gpus, p.model))
        self.limits = {(q.team, q.gpu_model): q.limit for q in self.quotas}
        self.guarantees = {(q.team, q.gpu_model): q.guarantee for q in self.quotas}
        self._node_states: dict[tuple[str, int], NodeState] = {}
        self.node_pool: dict[str, Pool] = {}
        for pool in grid:
            for i in range(pool.nodes):
                self.node_pool[f"node{i:04d}" if len(grid) == 1 else f"{pool.model}-node{i:04d}"] = pool
        self.free = {name: pool.gpus_per_node for name, pool in self.node_pool.items()}
        # One portal pool per GPU model (the policy places a job among its model's pools).
        self.pool_names = {p.model: POOL if len(grid) == 1 else f"{POOL}-{p.model}" for p in grid}
        self.arrivals = sorted(trace, key=lambda j: j.submit_time)
        self.pending: dict[str, PendingJob] = {}
        self.running: dict[str, RunningJob] = {}
        self.left: dict[str, float] = {j.id: j.duration for j in trace}  # work still to do
        self.ends: list[tuple[float, str, float]] = []  # (end, job, start) of running jobs
        self.pending_since: dict[str, float] = {}
        self.wait: dict[str, float] = defaultdict(float)
        # With explanations on: each job's first estimate (when it was made, the start it said) and how it came out.
        self.first_estimate: dict[str, tuple[float, float]] = {}
        self.estimated_done: set[str] = set()
        self.estimate_outcomes: list[tuple[float, float]] = []  # (estimated wait, actual wait) from the estimate
        self.done: dict[str, float] = {}
        self.held_gpus: dict[str, int] = defaultdict(int)  # per team, all models (fair-share usage)
        self.held_by_model: dict[tuple[str, str], int] = defaultdict(int)  # per (team, model), for the limits
        self.usage: dict[str, float] = {}
        self.clock = 0.0
        self.busy_gpu_s = 0.0
        self.lost_gpu_s = 0.0
        self.preemptions = 0
        self.violations = 0
        self.team_busy: dict[str, float] = defaultdict(float)
        self.reservations: list[Reservation] = []  # the last fair cycle's, handed to the next
        # Strict FIFO over the same arrivals, for the fair policy's bound (PolicyConfig.fifo_bound).
        self.shadow = (
            FifoShadow([self._node_state(name, free) for name, free in self.free.items()], self.quotas)
            if spec.policy == "fair" and spec.config.fifo_bound
            else None
        )
        self.fifo_start: dict[str, float] = {}

    # -- events ---------------------------------------------------------------------------

    def run(self, progress: Callable[[float], None] | None = None) -> None:
        at, reported = 0, -1
        while at < len(self.arrivals) or self.ends:
            if progress is not None and at * 100 // max(1, len(self.arrivals)) > reported:
                reported = at * 100 // max(1, len(self.arrivals))
                progress(reported / 100)  # by arrivals: cheap to count, close enough for a progress bar
            now = min(
                self.arrivals[at].submit_time if at < len(self.arrivals) else math.inf, self.ends[0][0] if self.ends else math.inf
            )
            self._advance(now)
            freed, was_empty = False, not self.pending
            while self.ends and self.ends[0][0] <= now:
                freed = self._finish(*heapq.heappop(self.ends)) or freed
            arrived = []
            while at < len(self.arrivals) and self.arrivals[at].submit_time <= now:
                arrived.append(self._arrive(self.arrivals[at]))
                at += 1
            if self.pending and (freed or self._could_start(arrived, was_empty)):
                self._cycle()

    def _advance(self, now: float) -> None:
        elapsed = now - self.clock
        self.usage = advance_usage(self.usage, self.held_gpus, elapsed, self.spec.config.half_life_s)
        held = sum(self.held_gpus.values())
        self.busy_gpu_s += held * elapsed
        for team, gpus in self.held_gpus.items():
            self.team_busy[team] += gpus * elapsed
        self.clock = now

    def _arrive(self, job: TraceJob) -> PendingJob:
        gpus_per_node, nodes = self.shapes[job.id]
        pending = PendingJob(
            job.id, job.team, self.model[job.id], gpus_per_node, nodes, job.priority, job.submit_time, job.duration
        )
        if self.shadow is not None:
            self.fifo_start[job.id] = self.shadow.arrive(pending)
            pending = replace(pending, fifo_start=self.fifo_start[job.id])
        self._enqueue(pending)
        return pending

    def _could_start(self, arrived: list[PendingJob], was_empty: bool) -> bool:
        """Whether a cycle after these arrivals (and no GPUs freed) could change anything; skipping saves time only.

        FIFO: only if the queue was empty (otherwise the blocked head still blocks). Fair: if GPUs
        are free, or an arrival fits in its team's guarantee and could reclaim.
        """
        if not arrived:
            return False
        if self.spec.policy == "fifo":
            return was_empty
        return any(self.free.values()) or any(
            self.held_by_model[(j.team, j.gpu_model)] + j.gpus <= self.guarantees.get((j.team, j.gpu_model), 0) for j in arrived
        )

    def _enqueue(self, job: PendingJob) -> None:
        self.pending[str(job.id)] = job
        self.pending_since[str(job.id)] = self.clock

    def _finish(self, end: float, job_id: str, start: float) -> bool:
        job = self.running.get(job_id)
        if job is None or job.start_time != start:
            return False  # preempted since; this end is stale
        self._release(job)
        self.done[job_id] = end
        return True

    def _release(self, job: RunningJob) -> None:
        del self.running[str(job.id)]
        for node, gpus in job.placement.items():
            self.free[node] += gpus
        self.held_gpus[job.team] -= job.gpus
        self.held_by_model[(job.team, job.gpu_model)] -= job.gpus

    # -- decisions ------------------------------------------------------------------------

    def _cycle(self) -> None:
        nodes = [self._node_state(name, free) for name, free in self.free.items()]
        pending, running = list(self.pending.values()), list(self.running.values())
        result = self._decide(Cluster(nodes), pending, running)
        for job_id, explanation in result.waiting.items():
            if explanation.estimated_start is not None and str(job_id) not in self.first_estimate:
                self.first_estimate[str(job_id)] = (self.clock, explanation.estimated_start)
        for preemption in result.preempted:
            self._preempt(self.running[str(preemption.job_id)])
        for admission in result.admitted:
            self._start(str(admission.job_id), admission.placement)
        self._check()

    def _node_state(self, name: str, free: int) -> NodeState:
        state = self._node_states.get((name, free))
        if state is None:
            pool = self.node_pool[name]
            state = NodeState(name, self.pool_names[pool.model], pool.model, pool.gpus_per_node, free)
            self._node_states[(name, free)] = state
        return state

    def _decide(self, cluster: Cluster, pending: list[PendingJob], running: list[RunningJob]) -> CycleResult:
        if self.spec.policy == "fifo":
            return fifo_cycle(
                now=self.clock, cluster=cluster, quotas=self.quotas, pending=pending, running=running, explain=False
            )
        result = run_cycle(
            now=self.clock,
            cluster=cluster,
            quotas=self.quotas,
            pending=pending,
            running=running,
            usage=self.usage,
            config=self.spec.config,
            previous=self.reservations,
        )
        self.reservations = result.reservations
        return result

    def _preempt(self, job: RunningJob) -> None:
        saved = job.checkpointed_at(self.clock) - job.start_time
        self.left[str(job.id)] -= saved
        self.lost_gpu_s += job.lost_work(self.clock)
        self.preemptions += 1
        self._release(job)
        trace = self.trace[str(job.id)]
        gpus_per_node, nodes = self.shapes[trace.id]
        self._enqueue(
            PendingJob(
                job.id,
                job.team,
                job.gpu_model,
                gpus_per_node,
                nodes,
                trace.priority,
                trace.submit_time,
                self.left[str(job.id)],
                fifo_start=self.fifo_start.get(trace.id),
            )
        )

    def _start(self, job_id: str, placement: Any) -> None:
        job = self.pending.pop(job_id, None)
        if job is None:
            self.violations += 1  # admitted twice, or never asked for
            return
        self.wait[job_id] += self.clock - self.pending_since.pop(job_id)
        if job_id in self.first_estimate and job_id not in self.estimated_done:
            made, said = self.first_estimate[job_id]
            self.estimate_outcomes.append((said - made, self.clock - made))
            self.estimated_done.add(job_id)
        for node, gpus in placement.items():
            self.free[node] -= gpus
            if self.free[node] < 0:
                self.violations += 1
        end = self.clock + job.walltime_s
        self.running[job_id] = RunningJob(
            job.id,
            job.team,
            job.gpu_model,
            dict(placement),
            job.priority,
            self.clock,
            end,
            self.spec.checkpoint_interval_s,
            fifo_start=job.fifo_start,
        )
        self.held_gpus[job.team] += job.gpus
        self.held_by_model[(job.team, job.gpu_model)] += job.gpus
        heapq.heappush(self.ends, (end, job_id, self.clock))

    def _check(self) -> None:
        self.violations += sum(1 for key, gpus in self.held_by_model.items() if gpus > self.limits.get(key, 0))

    # -- figures --------------------------------------------------------------------------

    def report(self, wall_s: float) -> dict[str, Any]:
        waits = sorted(self.wait[j] for j in self.done)
        jcts = [self.done[j] - self.trace[j].submit_time for j in self.done]
        start = min((j.submit_time for j in self.trace.values()), default=0.0)
        makespan = max(self.done.values(), default=start) - start
        per_team = self._per_team()
        return {
            "jobs": len(self.trace),
            "completed": len(self.done),
            "mean_wait_s": round(statistics.fmean(waits), 1) if waits else 0.0,
            "p50_wait_s": round(_percentile(waits, 50), 1),
            "p95_wait_s": round(_percentile(waits, 95), 1),
            "max_wait_s": round(waits[-1], 1) if waits else 0.0,
            "mean_jct_s": round(statistics.fmean(jcts), 1) if jcts else 0.0,
            "makespan_s": round(makespan, 1),
            "utilization": round(self.busy_gpu_s / (self.total_gpus * makespan), 4) if makespan else 0.0,
            "limit_violations": self.violations,
            "preemptions": self.preemptions,
            "lost_gpu_s": round(self.lost_gpu_s, 1),
            "per_team": per_team,
            "fairness": _fairness(per_team, self.wait, self.trace, self.done),
            **({"per_class": self._per_class()} if any(j.priority_class for j in self.trace.values()) else {}),
            **({"estimates": estimate_accuracy(self.estimate_outcomes)} if self.spec.config.explain else {}),
            "wall_s": round(wall_s, 2),
        }

    def _per_team(self) -> dict[str, dict[str, float]]:
        demand: dict[str, float] = defaultdict(float)
        jobs: dict[str, list[str]] = defaultdict(list)
        for job in self.trace.values():
            gpus_per_node, nodes = self.shapes[job.id]
            demand[job.team] += job.duration * gpus_per_node * nodes
            jobs[job.team].append(job.id)
        total_demand, total_busy = sum(demand.values()) or 1.0, self.busy_gpu_s or 1.0
        table = {}
        for team in sorted(jobs):
            done = [j for j in jobs[team] if j in self.done]
            run = sum(self.trace[j].duration for j in done) or 1.0
            table[team] = {
                "jobs": len(jobs[team]),
                "mean_wait_s": round(statistics.fmean(self.wait[j] for j in done), 1) if done else 0.0,
                "gpu_s": round(self.team_busy[team], 1),
                "share_of_gpu_time": round(self.team_busy[team] / total_busy, 4),
                "share_of_demand": round(demand[team] / total_demand, 4),
                "slowdown": round(sum(self.done[j] - self.trace[j].submit_time for j in done) / run, 3),
            }
        return table

    def _per_class(self) -> dict[str, dict[str, float]]:
        """Per portal class (the trace's names mapped): jobs, completed, mean and max wait."""
        jobs: dict[str, list[str]] = defaultdict(list)
        for job in self.trace.values():
            jobs[job.priority].append(job.id)
        table = {}
        for name in sorted(jobs):
            waits = [self.wait[j] for j in jobs[name] if j in self.done]
            table[name] = {
                "jobs": len(jobs[name]),
                "completed": len(waits),
                "mean_wait_s": round(statistics.fmean(waits), 1) if waits else 0.0,
                "max_wait_s": round(max(waits), 1) if waits else 0.0,
            }
        return table


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return 0.0
    return values[max(0, math.ceil(q / 100 * len(values)) - 1)]


def _fairness(
    per_team: dict[str, dict[str, float]], wait: dict[str, float], trace: dict[str, TraceJob], done: dict[str, float]
) -> dict[str, float]:
    slowdowns = [t["slowdown"] for t in per_team.values()]
    squares = sum(s * s for s in slowdowns)
    jain = sum(slowdowns) ** 2 / (len(slowdowns) * squares) if squares else 1.0  # nothing finished: no unfairness seen
    demand = sorted(per_team, key=lambda t: per_team[t]["share_of_demand"])
    small = set(demand[: len(demand) // 2])
    small_waits = [wait[j] for j in done if trace[j].team in small]
    all_waits = [wait[j] for j in done]
    mean_all = statistics.fmean(all_waits) if all_waits else 0.0
    ratio = statistics.fmean(small_waits) / mean_all if small_waits and mean_all else 0.0
    return {
        "jain_slowdown": round(jain, 4),
        "max_team_slowdown": round(max(slowdowns, default=1.0), 3),
        "small_team_wait_ratio": round(ratio, 4),
    }


def replay(trace: Sequence[TraceJob], spec: ReplaySpec, progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Run the whole trace under `spec.policy` and return its figures; `progress` hears 0-1 as it goes."""
    if spec.policy not in POLICIES:
        raise ValueError(f"unknown policy {spec.policy!r}; choose from {', '.join(POLICIES)}")
    started, cpu_started = time.perf_counter(), time.process_time()
    simulation = _Simulation(trace, spec)
    simulation.run(progress)
    report = simulation.report(time.perf_counter() - started)
    # CPU seconds next to wall seconds: on a shared machine the wall time also measures the neighbours.
    report["cpu_s"] = round(time.process_time() - cpu_started, 2)
    return report


# -- command line (shared by `python -m jobs.policy.replay` and `manage.py replay_trace`) ----


def estimate_accuracy(outcomes: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """How the first start estimate of each waiting job came out: the error (actual minus estimated wait,
    seconds; positive = later than said) and, for estimates of a wait of at least ten minutes, the ratio
    of actual to estimated wait, at the 10th, 50th and 90th percentiles."""
    errors = sorted(actual - said for said, actual in outcomes)
    ratios = sorted(actual / said for said, actual in outcomes if said >= 600)
    return {
        "jobs": len(outcomes),
        "error_s": {f"p{q}": round(_percentile(errors, q), 1) for q in (10, 50, 90)},
        "late_fraction": round(sum(e > 60 for e in errors) / len(errors), 3) if errors else 0.0,
        "ratio": {f"p{q}": round(_percentile(ratios, q), 3) for q in (10, 50, 90)},
        "ratio_jobs": len(ratios),
    }


def add_arguments(parser: argparse.ArgumentParser | Any) -> None:
    parser.add_argument(
        "trace",
        help="CSV with job_id, submit_time_s, duration_s, num_gpus; optional team, user, gpu_type, priority_class, gpu_fraction",
    )
    parser.add_argument(
        "--nodes",
        default="96",
        help="a node count (of --gpus-per-node GPUs), or pools MODEL:NODESxGPUS,... like a100:64x8,t4:32x4",
    )
    parser.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node when --nodes is a count")
    parser.add_argument("--class-map", default="", help="trace priority classes to the portal's, like LS=critical,BE=preemptible")
    parser.add_argument("--strict", action="store_true", help="refuse a trace with bad rows instead of skipping them")
    parser.add_argument("--policy", choices=POLICIES, default="fair")
    parser.add_argument("--baseline", choices=POLICIES, default=None, help="a second policy to compare with")
    parser.add_argument(
        "--quotas", default=None, help="JSON file of per-team quotas (default: equal guarantees, whole grid as limit)"
    )
    parser.add_argument("--checkpoint-interval", type=float, default=1800.0, help="seconds of run time between checkpoints")
    parser.add_argument("--half-life", type=float, default=PolicyConfig().half_life_s, help="usage decay half-life, seconds")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--estimates", action="store_true", help="explain every cycle and measure how each job's first start estimate came out"
    )


def run_from_options(options: dict[str, Any]) -> dict[str, Any]:
    """Replay the trace under the chosen policy (and baseline) and return {policy: figures, ...}.

    Raises `TraceError` for a bad pool spec or class map, an unmapped class, or (with `strict`) bad rows.
    """
    pools = parse_pools(options["nodes"], options["gpus_per_node"])
    loaded = read_trace(options["trace"], pools, parse_class_map(options.get("class_map")), strict=bool(options.get("strict")))
    trace = loaded.jobs
    quotas = load_quotas(options["quotas"], [p.model for p in pools]) if options.get("quotas") else None
    policies = [options["policy"]] + ([options["baseline"]] if options.get("baseline") not in (None, options["policy"]) else [])
    overrides: dict[str, Any] = options.get("policy_config") or {}  # other PolicyConfig fields, for experiments
    config = PolicyConfig(explain=bool(options.get("estimates")), half_life_s=options["half_life"], **overrides)
    plain = str(options["nodes"]).strip().isdigit()
    report: dict[str, Any] = {
        "trace": str(options["trace"]),
        "nodes": int(options["nodes"]) if plain else str(options["nodes"]),
        "gpus_per_node": options["gpus_per_node"],
        "pools": {p.model: {"nodes": p.nodes, "gpus_per_node": p.gpus_per_node} for p in pools},
        "skipped_rows": loaded.skipped_rows,
        "row_errors": loaded.errors[:MAX_REPORTED_ERRORS],
        "fractional_jobs_rounded": loaded.fractional_jobs_rounded,
    }
    for policy in policies:
        spec = ReplaySpec(
            sum(p.nodes for p in pools),
            pools[0].gpus_per_node,
            policy,
            options["checkpoint_interval"],
            quotas,
            config,
            pools=() if plain else pools,
        )
        report[policy] = replay(trace, spec)
    return report


SUMMARY_KEYS = (
    *("completed", "mean_wait_s", "p50_wait_s", "p95_wait_s", "max_wait_s", "mean_jct_s", "makespan_s", "utilization"),
    *("limit_violations", "preemptions", "lost_gpu_s", "wall_s", "cpu_s"),
)


def format_report(report: dict[str, Any], write: Callable[[str], Any]) -> None:
    policies = [p for p in POLICIES if p in report]
    if report.get("skipped_rows"):
        write(f"skipped {report['skipped_rows']} bad row(s); first: " + "; ".join(report["row_errors"][:5]))
    if report.get("fractional_jobs_rounded"):
        write(f"{report['fractional_jobs_rounded']} job(s) asking for part of a GPU ran on a whole GPU")
    write(f"{'':<18}" + "".join(f"{p:>14}" for p in policies))
    for key in SUMMARY_KEYS:
        write(f"{key:<18}" + "".join(f"{report[p][key]:>14}" for p in policies))
    for key in ("jain_slowdown", "max_team_slowdown", "small_team_wait_ratio"):
        write(f"{key:<18}" + "".join(f"{report[p]['fairness'][key]:>14}" for p in policies))
    classes = sorted({c for p in policies for c in report[p].get("per_class", {})})
    for name in classes:
        for key in ("mean_wait_s", "max_wait_s"):
            cells = (report[p].get("per_class", {}).get(name, {}).get(key, "-") for p in policies)
            write(f"{name[:11] + ' ' + key.split('_')[0] + ' wait':<18}" + "".join(f"{cell:>14}" for cell in cells))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Replay a GPU job trace through the admission policy.")
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    try:
        report = run_from_options(options)
    except TraceError as exc:
        parser.exit(2, f"replay: {exc}\n")
    if options["json"]:
        print(json.dumps(report, indent=2))
    else:
        format_report(report, print)


if __name__ == "__main__":
    main()
