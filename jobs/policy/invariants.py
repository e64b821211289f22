"""Checks that any cycle's decisions keep the grid's invariants; used by tests and the replay.

A team's GPUs of a model never exceed its limit, a node never gives out more GPUs than it has free
(so a pool never exceeds its healthy capacity), only healthy nodes take work, and a job is admitted
at most once and only if it was pending.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from jobs.policy.model import Cluster, CycleResult, JobId, PendingJob, Quota, RunningJob


def violations(
    cluster: Cluster, quotas: Iterable[Quota], pending: Sequence[PendingJob], running: Sequence[RunningJob], result: CycleResult
) -> list[str]:
    """Every broken invariant, in words; an empty list means the decisions are sound."""
    problems: list[str] = []
    pending_by_id = {j.id: j for j in pending}
    stopped = {p.job_id for p in result.preempted}
    counts = Counter(a.job_id for a in result.admitted)
    problems += [f"job {job_id} admitted {n} times" for job_id, n in counts.items() if n > 1]
    problems += [f"job {a.job_id} was not pending" for a in result.admitted if a.job_id not in pending_by_id]
    problems += [
        f"held job {a.job_id} admitted" for a in result.admitted if a.job_id in pending_by_id and pending_by_id[a.job_id].held
    ]
    problems += [f"job {j} both admitted and waiting" for j in counts if j in result.waiting]
    problems += _node_problems(cluster, running, stopped, result)
    problems += _limit_problems(quotas, pending_by_id, running, stopped, result)
    return problems


def _node_problems(cluster: Cluster, running: Sequence[RunningJob], stopped: set[JobId], result: CycleResult) -> list[str]:
    nodes = {n.name: n for n in cluster.nodes}
    freed: dict[str, int] = defaultdict(int)
    for job in running:
        if job.id in stopped:
            for name, gpus in job.placement.items():
                freed[name] += gpus
    taken: dict[str, int] = defaultdict(int)
    problems = []
    for admission in result.admitted:
        for name, gpus in admission.placement.items():
            node = nodes.get(name)
            if node is None or not node.healthy or node.pool != admission.pool:
                problems.append(f"job {admission.job_id} placed on unusable node {name}")
            taken[name] += gpus
    for name, gpus in taken.items():
        if name in nodes and gpus > nodes[name].free + freed[name]:
            problems.append(f"node {name}: {gpus} GPUs given out, {nodes[name].free + freed[name]} free")
    return problems


def _limit_problems(
    quotas: Iterable[Quota],
    pending: dict[JobId, PendingJob],
    running: Sequence[RunningJob],
    stopped: set[JobId],
    result: CycleResult,
) -> list[str]:
    limits = {(q.team, q.gpu_model): q.limit for q in quotas}
    used: dict[tuple[str, str], int] = defaultdict(int)
    for job in running:
        if job.id not in stopped:
            used[(job.team, job.gpu_model)] += job.gpus
    before = dict(used)
    for admission in result.admitted:
        admitted = pending.get(admission.job_id)
        if admitted is not None:
            used[(admitted.team, admitted.gpu_model)] += admitted.gpus
    return [
        f"team {team}/{model}: {gpus} GPUs over limit {limits.get((team, model), 0)}"
        for (team, model), gpus in used.items()
        if gpus > limits.get((team, model), 0) and gpus > before.get((team, model), 0)
    ]
