"""A strict FIFO schedule run alongside the fair one: each job's start under FIFO, known on arrival.

Under strict FIFO (jobs/policy/fifo.py: one queue by submit time, a blocked head blocks everyone,
no backfill, no preemption) a job's start depends only on the jobs submitted before it, their shapes
and their walltimes: never on the jobs behind it, nor on what the fair policy did. So the FIFO
schedule of the same arrivals can be kept on the side, one job at a time as jobs arrive, and each
job's FIFO start is known as soon as it is submitted. The fair policy uses it as a bound
(`PendingJob.fifo_start`, `PolicyConfig.fifo_bound`): a job whose wait reaches what FIFO would have
given it goes by age, ahead of fair share, and holds its own reservation until it starts.

With walltimes equal to run times (the replay) the shadow reproduces the FIFO replay's starts
exactly: same placement (best fit, whole nodes for gangs), same team limits. With walltimes as
upper estimates (the portal) jobs end no later than the shadow says, so its starts are late
estimates of FIFO's, and the bound is looser, never tighter.

A job that no pool of its model could ever hold gets `math.inf` and does not block the shadow's
queue (FIFO would wait for it forever; the fair policy refuses it as having no nodes).
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Iterable

from jobs.policy.fifo import place_in_order
from jobs.policy.model import JobId, NodeState, PendingJob, Quota
from jobs.policy.placement import FreeIndex, Placement


class FifoShadow:
    """The FIFO schedule of the jobs given to `arrive`, in submit order, on an initially empty grid."""

    def __init__(self, nodes: Iterable[NodeState], quotas: Iterable[Quota] = ()) -> None:
        self.index = FreeIndex(nodes)
        self.limits = {(q.team, q.gpu_model): q.limit for q in quotas}
        self.used: dict[tuple[str, str], int] = defaultdict(int)
        self.head = -math.inf  # the last start: FIFO starts no job before the one submitted ahead of it
        self.starts: dict[JobId, float] = {}
        # (end, order, team, model, placement) of the jobs the shadow has started and not yet ended
        self._ends: list[tuple[float, int, str, str, Placement]] = []
        self._order = 0

    def arrive(self, job: PendingJob) -> float:
        """Queue the job behind every job given before it and return its start under FIFO.

        Jobs must come in submit order (ties in the order FIFO takes them); one given out of order
        starts no earlier than the job given before it, as if submitted then.
        """
        if job.id in self.starts:
            return self.starts[job.id]
        if not self._could_ever_fit(job):
            self.starts[job.id] = math.inf
            return math.inf
        at = max(job.submit_time, self.head)
        self._end_until(at)
        while (spot := self._spot(job)) is None:
            if not self._ends:  # nothing left to end and still no room: FIFO would never start it
                self.starts[job.id] = math.inf
                return math.inf
            at = max(at, self._ends[0][0])
            self._end_until(at)
        self.index.take(spot)
        self.used[(job.team, job.gpu_model)] += job.gpus
        heapq.heappush(self._ends, (at + job.walltime_s, self._order, job.team, job.gpu_model, spot))
        self._order += 1
        self.head = self.starts[job.id] = at
        return at

    def _spot(self, job: PendingJob) -> Placement | None:
        limit = self.limits.get((job.team, job.gpu_model))
        if limit is not None and self.used[(job.team, job.gpu_model)] + job.gpus > limit:
            return None
        found = place_in_order(self.index, job)
        return found[1] if found else None

    def _could_ever_fit(self, job: PendingJob) -> bool:
        limit = self.limits.get((job.team, job.gpu_model))
        if limit is not None and job.gpus > limit:
            return False
        return any(self.index.fits_shape(pool, job) for pool in self.index.pools_for(job))

    def _end_until(self, at: float) -> None:
        while self._ends and self._ends[0][0] <= at:
            _, _, team, model, placement = heapq.heappop(self._ends)
            self.index.give_back(placement)
            self.used[(team, model)] -= sum(placement.values())
