"""Strict FIFO: one queue for everybody, oldest first, and a blocked head blocks every job behind it.

The baseline the fair policy is measured against. It keeps the same node rules (gangs all-or-nothing,
best fit, whole nodes for large jobs) and the same team limits, but has no classes, no fair share,
no backfill and no preemption.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from jobs.policy.ledger import Ledger
from jobs.policy.model import Admission, Cluster, CycleResult, Explanation, PendingJob, Quota, Reason, RunningJob
from jobs.policy.placement import FreeIndex, Placement


def place_in_order(index: FreeIndex, job: PendingJob) -> tuple[str, Placement] | None:
    """FIFO's placement: the first pool of the job's model with room, best fit there (also the shadow's)."""
    for pool in index.pools_for(job):
        placement = index.place_unreserved(pool, job)
        if placement:
            return pool, placement
    return None


BEHIND = Explanation(Reason.QUEUE, "behind the head of the queue", None, None, None)


def fifo_cycle(
    *,
    now: float,
    cluster: Cluster,
    quotas: Iterable[Quota],
    pending: Sequence[PendingJob],
    running: Sequence[RunningJob],
    explain: bool = True,
) -> CycleResult:
    """Admit from the head of the single queue until the head does not fit."""
    index, ledger = FreeIndex(cluster.nodes, cluster.pool_teams), Ledger(quotas, running)
    result = CycleResult()
    queue = sorted((j for j in pending if not j.held), key=lambda j: j.submit_time)
    for at, job in enumerate(queue):
        quota = ledger.quota(job.team, job.gpu_model)
        over_limit = quota is None or ledger.used[(job.team, job.gpu_model)] + job.gpus > quota.limit
        spot = None if over_limit else place_in_order(index, job)
        if spot is None:
            reason = Reason.QUOTA if over_limit else Reason.CAPACITY
            result.waiting[job.id] = Explanation(reason, "head of the queue does not fit", 1, 1, None)
            for behind, other in enumerate(queue[at + 1 :], start=2):
                result.waiting[other.id] = (
                    Explanation(Reason.QUEUE, f"behind job {job.id}", None, behind, None) if explain else BEHIND
                )
            break
        index.take(spot[1])
        ledger.charge(job.team, job.gpu_model, job.gpus)
        result.admitted.append(Admission(job.id, spot[0], spot[1]))
    for job in pending:
        if job.held:
            result.waiting[job.id] = Explanation(Reason.BUDGET, "held", None, None, None)
    return result
