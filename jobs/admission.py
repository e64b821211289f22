"""The bridge between the portal's rows and the pure admission policy (jobs.policy).

Builds the policy's plain inputs from nodes, jobs, quotas, classes and usage history: deciding is
the policy's job, writing the decisions is jobs.services'. For a backend that queues jobs itself,
`Backlog` runs the same policy once more over the GPUs that free up next and keeps what the
backend may hold without ever preempting on its own (docs/slurm.md, "The backlog").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings

from cluster import services as cluster_services
from cluster.models import Node
from cluster.services import TeamsOnly
from cluster.states import NodeState as NodeStatus
from cluster.states import PoolKind
from jobs import policy
from jobs.models import Job
from jobs.states import HOLDS_GPUS, WAITING, JobState
from quotas import services as quota_services

DEFAULT_CLASS = "standard"


# A node only some teams may use (another team's burst) is put in a pool of its own for the policy,
# named `<pool>~<team>+<team>`, which only those teams' jobs may use; `real_pool` names the pool again.
TEAMS_ONLY_MARK = "~"


def cluster(reserved: dict[str, int], teams_only: Mapping[str, TeamsOnly] | None = None) -> policy.Cluster:
    teams_only = teams_only or {}
    nodes, pool_teams = [], {}
    for n in Node.objects.select_related("pool"):
        pool = n.pool.name
        if (rule := teams_only.get(n.name)) is not None:
            pool = f"{pool}{TEAMS_ONLY_MARK}{'+'.join(sorted(rule.teams))}"
            pool_teams[pool] = frozenset(rule.teams)
        nodes.append(
            policy.NodeState(
                name=n.name,
                pool=pool,
                gpu_model=n.gpu_model,
                gpus=n.gpus,
                free=max(0, n.gpus - reserved.get(n.name, 0)),
                healthy=n.state == NodeStatus.READY,
                is_cloud=n.pool.kind == PoolKind.CLOUD,
            )
        )
    return policy.Cluster(nodes, pool_teams)


def real_pool(pool: str) -> str:
    """The grid's pool of a policy pool (a teams-only node's pool of its own is part of it)."""
    return pool.partition(TEAMS_ONLY_MARK)[0]


def kept_off_bursts(
    waiting: Mapping[policy.JobId, policy.Explanation],
    pending: Iterable[policy.PendingJob],
    grid: policy.Cluster,
    teams_only: Mapping[str, TeamsOnly],
) -> dict[policy.JobId, str]:
    """Waiting jobs that the free GPUs of a node their team may not use (another team's burst) would
    have fitted at the start of the cycle, with why: they are told it, not just "capacity"."""
    if not teams_only:
        return {}
    open_nodes = [(n, teams_only[n.name]) for n in grid.nodes if n.name in teams_only and n.healthy and n.free > 0]
    found: dict[policy.JobId, str] = {}
    for job in pending:
        explanation = waiting.get(job.id)
        if explanation is None or explanation.reason not in ROOM_REASONS:
            continue
        for node, rule in open_nodes:
            if node.gpu_model == job.gpu_model and job.team not in rule.teams and node.free >= min(job.gpus, node.gpus):
                found[job.id] = rule.why
                break
    return found


# Reasons that say the job waits for room (not for its quota, class or budget).
ROOM_REASONS = frozenset({policy.Reason.CAPACITY, policy.Reason.FRAGMENTATION, policy.Reason.GANG, policy.Reason.NO_NODES})


def _class_of(job: Job, known: set[str]) -> str:
    return job.priority if job.priority in known else DEFAULT_CLASS


def pending_jobs(
    jobs: Iterable[Job],
    classes: tuple[policy.PriorityClassSpec, ...],
    lowered: frozenset[str] = frozenset(),
    fifo_starts: Mapping[int, float] | None = None,
) -> list[policy.PendingJob]:
    """The policy's view of waiting jobs; teams in `lowered` (a budget action) have every job go as the lowest class.

    `fifo_starts` (from `fifo_starts`) gives each job its start under strict FIFO, the fair policy's bound.
    """
    starts = fifo_starts or {}
    known = {c.name for c in classes}
    lowest = min(classes, key=lambda c: c.rank).name
    return [
        policy.PendingJob(
            id=j.pk,
            team=j.team.slug,
            gpu_model=j.gpu_model,
            gpus_per_node=j.gpus_per_node,
            nodes=j.nodes,
            priority=lowest if j.team.slug in lowered else _class_of(j, known),
            submit_time=j.submitted_at.timestamp(),
            walltime_s=float(j.walltime_s),
            held=j.state == JobState.HELD,
            fifo_start=starts.get(j.pk),
        )
        for j in jobs
    ]


def fifo_starts(jobs: Iterable[Job], grid: policy.Cluster, team_quotas: Iterable[policy.Quota]) -> dict[int, float]:
    """Each job's start under strict FIFO over `jobs` (the waiting jobs and those holding GPUs), on the
    grid's healthy nodes emptied, in submit order: the same `FifoShadow` the replay keeps.

    Jobs that have ended are left out, so these starts are never later than FIFO's over the whole
    history would be: the bound they give errs on the side of the waiting jobs.
    """
    shadow = policy.FifoShadow([replace(node, free=node.gpus) for node in grid.nodes], team_quotas)
    ordered = sorted(jobs, key=lambda j: (j.submitted_at, j.pk))
    return {
        j.pk: shadow.arrive(
            policy.PendingJob(
                j.pk,
                j.team.slug,
                j.gpu_model,
                j.gpus_per_node,
                j.nodes,
                DEFAULT_CLASS,
                j.submitted_at.timestamp(),
                float(j.walltime_s),
            )
        )
        for j in ordered
    }


def with_fifo_starts(running: Iterable[policy.RunningJob], starts: Mapping[int, float]) -> list[policy.RunningJob]:
    """The running jobs with their FIFO starts (a job that started as late as FIFO's start is not reclaimed)."""
    return [replace(job, fifo_start=starts.get(int(job.id))) for job in running]


QUEUED = frozenset({JobState.ADMITTED, JobState.DISPATCHED})


def running_jobs(
    jobs: Iterable[Job], known: set[str], now: datetime | None = None, idle: frozenset[int] = frozenset()
) -> list[policy.RunningJob]:
    """The policy's view of jobs holding GPUs. A job not started yet (queued on the backend, or on its
    way there) starts `now` as far as the policy knows: it is no reclaim victim before it has run,
    and its GPUs free up a walltime after it starts, not after its admission. `idle`: the ids the
    telemetry guard marked reclaimable for idle GPUs (`cluster.services.idle_reclaimable_jobs`)."""
    out = []
    for j in jobs:
        queued = now if j.started_at is None and j.state in QUEUED else None
        start = j.started_at or queued or j.admitted_at or j.submitted_at
        out.append(
            policy.RunningJob(
                id=j.pk,
                team=j.team.slug,
                gpu_model=j.gpu_model,
                placement=dict(j.placement),
                priority=_class_of(j, known),
                start_time=start.timestamp(),
                expected_end=(start + timedelta(seconds=j.walltime_s)).timestamp(),
                checkpoint_interval_s=float(j.checkpoint_interval_s) if j.checkpoint_interval_s else None,
                last_checkpoint=j.last_checkpoint_at.timestamp() if j.last_checkpoint_at else None,
                idle=j.pk in idle,
            )
        )
    return out


def idle_shares(now: datetime, window_s: float) -> dict[str, float]:
    """Each team's idle share: idle GPU samples over all GPU samples of its jobs that held GPUs in the
    last `window_s` (running, or finished since), from the telemetry's per-job sums (`JobEfficiency`)."""
    since = now - timedelta(seconds=window_s)
    recent = Job.objects.filter(state__in=HOLDS_GPUS) | Job.objects.filter(finished_at__gte=since, started_at__isnull=False)
    team_of = dict(recent.values_list("pk", "team__slug"))
    idle: dict[str, int] = defaultdict(int)
    seen: dict[str, int] = defaultdict(int)
    for job_id, (idle_samples, samples) in cluster_services.idle_fractions(team_of).items():
        idle[team_of[job_id]] += idle_samples
        seen[team_of[job_id]] += samples
    return {team: idle[team] / seen[team] for team in seen if seen[team]}


def quotas(pairs: Iterable[tuple[str, str]]) -> list[policy.Quota]:
    """A quota for every (team, model) in play; teams without a row get DEFAULT_TEAM_GPU_LIMIT."""
    rows = quota_services.quotas_by_team_and_model()
    department = quota_services.departments_of_teams()
    specs = [
        policy.Quota(slug, model, q.guarantee, q.limit, float(q.weight), q.lendable, department.get(slug, ""))
        for (slug, model), q in rows.items()
    ]
    default = settings.DEFAULT_TEAM_GPU_LIMIT
    return specs + [
        policy.Quota(slug, model, 0, default, department=department.get(slug, "")) for slug, model in set(pairs) - set(rows)
    ]


def classes() -> tuple[policy.PriorityClassSpec, ...]:
    specs = tuple(
        policy.PriorityClassSpec(c.name, c.rank, preemptible=c.preemptible, may_borrow=not c.within_guarantee_only)
        for c in quota_services.priority_classes()
    )
    return specs or policy.DEFAULT_CLASSES


def usage(now: datetime, running: Iterable[policy.RunningJob], half_life_s: float) -> dict[str, float]:
    """Each team's decayed usage brought up to `now` (GPUs held since the last cycle count as used)."""
    held: dict[str, int] = defaultdict(int)
    for job in running:
        held[job.team] += job.gpus
    current: dict[str, float] = {}
    for team, (value, at) in quota_services.usage_history().items():
        elapsed = max(0.0, (now - at).total_seconds())
        current[team] = policy.advance_usage({team: value}, {team: held.get(team, 0)}, elapsed, half_life_s).get(team, 0.0)
    for team in set(held) - set(current):
        current[team] = 0.0
    return current


def snapshot_jobs() -> tuple[list[Job], list[Job]]:
    """Waiting (and held) jobs oldest first, and the jobs holding GPUs."""
    waiting = list(Job.objects.filter(state__in=WAITING | {JobState.HELD}).select_related("team").order_by("submitted_at", "id"))
    holding = list(Job.objects.filter(state__in=HOLDS_GPUS).select_related("team"))
    return waiting, holding


# --- the backend's backlog -------------------------------------------------------------------


def may_preempt(by: policy.PriorityClassSpec | None, victim: policy.PriorityClassSpec | None) -> bool:
    """Whether a job of class `by`, queued on the backend, could preempt a running job of class `victim`
    there: as priority classes compile to Slurm QOS (quotas.slurm), a class that is not preemptible
    preempts every preemptible class of lower rank."""
    return by is not None and victim is not None and not by.preemptible and victim.preemptible and victim.rank < by.rank


@dataclass(frozen=True)
class BacklogView:
    """What the grid holds per GPU model beyond its GPUs: jobs admitted and queued on the backend.

    A model's backlog is the GPUs its admitted jobs hold beyond the GPUs of its healthy on-premises
    nodes (the portal's ledger counts queued jobs as holding GPUs, so per model the difference is what
    waits on the backend whatever node the backend starts each job on)."""

    nodes: tuple[policy.NodeState, ...]
    pool_teams: Mapping[str, frozenset[str]]  # pools only some teams may use (policy.Cluster.pool_teams)
    reserved: Mapping[str, int]  # GPUs held per node, as the portal placed its jobs
    capacity: Mapping[str, int]
    held: Mapping[str, int]
    queued_classes: Mapping[str, frozenset[str]]  # classes of dispatched jobs not yet started, per model
    holding_classes: Mapping[str, frozenset[str]]  # classes of every job holding GPUs, per model
    preempting: frozenset[str]  # models with a preemption under way
    classes: Mapping[str, policy.PriorityClassSpec]

    @classmethod
    def of(
        cls,
        grid: policy.Cluster,
        reserved: Mapping[str, int],
        holding: Iterable[Job],
        classes: Iterable[policy.PriorityClassSpec],
    ) -> BacklogView:
        capacity: dict[str, int] = defaultdict(int)
        held: dict[str, int] = defaultdict(int)
        for node in grid.nodes:
            held[node.gpu_model] += reserved.get(node.name, 0)
            if node.healthy and not node.is_cloud:
                capacity[node.gpu_model] += node.gpus
        queued: dict[str, set[str]] = defaultdict(set)
        holders: dict[str, set[str]] = defaultdict(set)
        preempting = set()
        for job in holding:
            holders[job.gpu_model].add(job.priority)
            if job.state == JobState.DISPATCHED:
                queued[job.gpu_model].add(job.priority)
            elif job.state == JobState.PREEMPTING:
                preempting.add(job.gpu_model)
        return cls(
            nodes=tuple(grid.nodes),
            pool_teams=dict(grid.pool_teams),
            reserved=dict(reserved),
            capacity=dict(capacity),
            held=dict(held),
            queued_classes={m: frozenset(c) for m, c in queued.items()},
            holding_classes={m: frozenset(c) for m, c in holders.items()},
            preempting=frozenset(preempting),
            classes={c.name: c for c in classes},
        )

    def backlog(self, model: str, adding: int = 0) -> int:
        return max(0, self.held.get(model, 0) + adding - self.capacity.get(model, 0))

    def could_be_preempted_there(self, model: str, priority: str) -> bool:
        """Whether a job queued on the backend for `model` could preempt a job of class `priority` there."""
        victim = self.classes.get(priority)
        return any(may_preempt(self.classes.get(c), victim) for c in self.queued_classes.get(model, ()))

    def split_preemptible(
        self, admissions: list[policy.Admission], jobs: Mapping[int, Job]
    ) -> tuple[list[policy.Admission], list[policy.Admission]]:
        """Hold back admissions the backend's queued jobs could preempt there (the backend must never
        preempt on its own): they wait until the model's backlog has started. Without a backlog, none."""
        kept: list[policy.Admission] = []
        held_back: list[policy.Admission] = []
        for admit in admissions:
            job = jobs[int(admit.job_id)]
            if self.backlog(job.gpu_model) > 0 and self.could_be_preempted_there(job.gpu_model, job.priority):
                held_back.append(admit)
            else:
                kept.append(admit)
        return kept, held_back


@dataclass(frozen=True)
class Backlog:
    """A second pass of the same policy over the GPUs that will free up next: it admits, in the
    policy's order, jobs the backend queues and starts itself as GPUs free, within `budget_gpus`.

    Each queued job counts against its team's quota as a running job does (the policy's ledger sees
    every admitted job), so when the backend starts it the team holds no more than the portal counted.
    """

    view: BacklogView
    budget_gpus: int
    now: float
    quotas: list[policy.Quota]
    usage: Mapping[str, float]
    config: policy.PolicyConfig

    def choose(
        self,
        pending: list[policy.PendingJob],
        running: list[policy.RunningJob],
        admitted: list[policy.Admission],
        first: policy.CycleResult,
        jobs: Mapping[int, Job],
    ) -> list[policy.Admission]:
        """The backlog's admissions in the policy's order. Jobs the pass refuses for their team's quota
        (queued jobs count) get that reason in `first.waiting`, where they would otherwise wait for
        capacity: they are not queued because the team is at its limit."""
        held_by_node: dict[str, int] = defaultdict(int)
        adding: dict[str, int] = defaultdict(int)
        by_id = {job.id: job for job in pending}
        now_running = list(running)
        holders = {model: set(classes) for model, classes in self.view.holding_classes.items()}
        for admit in admitted:
            job = by_id[admit.job_id]
            adding[job.gpu_model] += job.gpus
            holders.setdefault(job.gpu_model, set()).add(jobs[int(job.id)].priority)
            for node, gpus in admit.placement.items():
                held_by_node[node] += gpus
            now_running.append(self._as_running(job, admit))
        queued = sum(self.view.backlog(m, adding.get(m, 0)) for m in {*self.view.held, *adding})
        room = self.budget_gpus - queued
        if room <= 0:
            return []
        closed = set(self.view.preempting) | {by_id[a.job_id].gpu_model for a in first.admitted if a.preempts}
        chosen_ids = {a.job_id for a in first.admitted}
        candidates = [
            job for job in pending
            if not job.held and job.id not in chosen_ids and job.gpu_model not in closed
            and not self._preempts_holder(jobs[int(job.id)].priority, holders.get(job.gpu_model, ()))
        ]  # fmt: skip
        if not candidates:
            return []
        result = policy.run_cycle(
            now=self.now,
            cluster=self._next_layer(held_by_node, room),
            quotas=self.quotas,
            pending=candidates,
            running=now_running,
            usage=self.usage,
            config=replace(self.config, max_reclaims_per_cycle=0, explain=False),
        )
        for job_id, why in result.waiting.items():
            known = first.waiting.get(job_id)
            if why.reason == policy.Reason.QUOTA and known is not None and known.reason != policy.Reason.QUOTA:
                first.waiting[job_id] = replace(known, reason=why.reason, detail=why.detail)
        return self._within(result.admitted, room, candidates, now_running, jobs)

    def _next_layer(self, adding: Mapping[str, int], room: int) -> policy.Cluster:
        """Each healthy on-premises node once more (the GPUs its running jobs give back next), offered
        per model only up to `room` GPUs, the nodes with the most such GPUs first: the backend places
        a queued job wherever GPUs free, so which nodes does not matter, and a pass over a few nodes
        leaves the rest of a busy queue waiting in bulk instead of placing thousands of jobs to keep a few."""
        reserved = self.view.reserved
        layer = {
            node.name: max(0, 2 * node.gpus - reserved.get(node.name, 0) - adding.get(node.name, 0))
            for node in self.view.nodes
            if node.healthy and not node.is_cloud
        }
        offered: dict[str, int] = defaultdict(int)
        free: dict[str, int] = {}
        for node in sorted(self.view.nodes, key=lambda n: (-layer.get(n.name, 0), n.name)):
            gpus = layer.get(node.name, 0)
            if gpus and offered[node.gpu_model] < room:
                free[node.name] = gpus
                offered[node.gpu_model] += gpus
        return policy.Cluster([replace(node, free=free.get(node.name, 0)) for node in self.view.nodes], self.view.pool_teams)

    def _preempts_holder(self, priority: str, holders: Iterable[str]) -> bool:
        spec = self.view.classes.get(priority)
        return any(may_preempt(spec, self.view.classes.get(c)) for c in holders)

    def _within(
        self,
        admissions: list[policy.Admission],
        room: int,
        candidates: list[policy.PendingJob],
        running: list[policy.RunningJob],
        jobs: Mapping[int, Job],
    ) -> list[policy.Admission]:
        """The admissions in order while they fit in `room`; none that could preempt one queued before
        it; and none that borrows while a job within its team's guarantee still waits for the model."""
        by_id = {job.id: job for job in candidates}
        classes: dict[str, set[str]] = defaultdict(set)
        chosen: list[policy.Admission] = []
        for admit in admissions:
            job = by_id[admit.job_id]
            if admit.preempts or self._preempts_holder(jobs[int(job.id)].priority, classes[job.gpu_model]):
                continue
            if job.gpus > room:
                break
            room -= job.gpus
            classes[job.gpu_model].add(jobs[int(job.id)].priority)
            chosen.append(admit)
        used: dict[tuple[str, str], int] = defaultdict(int)
        for held in running:
            used[(held.team, held.gpu_model)] += held.gpus
        for admit in chosen:
            used[(by_id[admit.job_id].team, by_id[admit.job_id].gpu_model)] += by_id[admit.job_id].gpus
        guarantee = {(q.team, q.gpu_model): q.guarantee for q in self.quotas}
        left = {a.job_id for a in chosen}
        claimed = {
            job.gpu_model for job in candidates
            if job.id not in left and used[(job.team, job.gpu_model)] + job.gpus <= guarantee.get((job.team, job.gpu_model), 0)
        }  # fmt: skip
        return [a for a in chosen if not (a.borrowing and by_id[a.job_id].gpu_model in claimed)]

    def _as_running(self, job: policy.PendingJob, admit: policy.Admission) -> policy.RunningJob:
        return policy.RunningJob(
            id=job.id,
            team=job.team,
            gpu_model=job.gpu_model,
            placement=dict(admit.placement),
            priority=job.priority,
            start_time=self.now,
            expected_end=self.now + job.walltime_s,
        )
