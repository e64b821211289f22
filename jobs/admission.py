"""The bridge between the portal's rows and the pure admission policy (jobs.policy).

Builds the policy's plain inputs from nodes, jobs, quotas, classes and usage history, and nothing
else: deciding is the policy's job, writing the decisions is jobs.services'.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings

from cluster.models import Node
from cluster.states import NodeState as NodeStatus
from cluster.states import PoolKind
from jobs import policy
from jobs.models import Job
from jobs.states import HOLDS_GPUS, WAITING, JobState
from quotas import services as quota_services

DEFAULT_CLASS = "standard"


def cluster(reserved: dict[str, int]) -> policy.Cluster:
    return policy.Cluster(
        [
            policy.NodeState(
                name=n.name,
                pool=n.pool.name,
                gpu_model=n.gpu_model,
                gpus=n.gpus,
                free=max(0, n.gpus - reserved.get(n.name, 0)),
                healthy=n.state == NodeStatus.READY,
                is_cloud=n.pool.kind == PoolKind.CLOUD,
            )
            for n in Node.objects.select_related("pool")
        ]
    )


def _class_of(job: Job, known: set[str]) -> str:
    return job.priority if job.priority in known else DEFAULT_CLASS


def pending_jobs(
    jobs: Iterable[Job], classes: tuple[policy.PriorityClassSpec, ...], lowered: frozenset[str] = frozenset()
) -> list[policy.PendingJob]:
    """The policy's view of waiting jobs; teams in `lowered` (a budget action) have every job go as the lowest class."""
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
        )
        for j in jobs
    ]


def running_jobs(jobs: Iterable[Job], known: set[str]) -> list[policy.RunningJob]:
    out = []
    for j in jobs:
        start = j.started_at or j.admitted_at or j.submitted_at
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
            )
        )
    return out


def quotas(pairs: Iterable[tuple[str, str]]) -> list[policy.Quota]:
    """A quota for every (team, model) in play; teams without a row get DEFAULT_TEAM_GPU_LIMIT."""
    rows = quota_services.quotas_by_team_and_model()
    specs = [policy.Quota(slug, model, q.guarantee, q.limit, float(q.weight), q.lendable) for (slug, model), q in rows.items()]
    default = settings.DEFAULT_TEAM_GPU_LIMIT
    return specs + [policy.Quota(slug, model, 0, default) for slug, model in set(pairs) - set(rows)]


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
