"""One admission cycle of the fair policy.

Order: priority class (rank), then weighted fair share (decayed usage plus GPUs held, per unit of
weight, recomputed after every admission), then age. Each team's pending jobs form a line sorted by
class and age; a heap over the teams' line heads yields the next job, so a cycle costs
O(pending · log teams) plus placement, which is O(GPUs per node · log nodes) per job.

Then, for waiting jobs that would fit in their team's guarantee, reclaim lent GPUs by preemption.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import operator
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter, itemgetter

from jobs.policy.explain import explain_waiting
from jobs.policy.ledger import Ledger, QuotaVerdict, usage_key
from jobs.policy.model import (
    Admission,
    Cluster,
    CycleResult,
    ExplanationRow,
    Explanations,
    JobId,
    PendingJob,
    PolicyConfig,
    Preemption,
    PriorityClassSpec,
    Quota,
    Reason,
    Reservation,
    RunningJob,
)
from jobs.policy.placement import FreeIndex, Placement
from jobs.policy.reclaim import Eligible, VictimIndex, plan_reclaim
from jobs.policy.timeline import Releases, StartEstimator, plan_reservation

RECLAIMABLE = frozenset({Reason.CAPACITY, Reason.FRAGMENTATION, Reason.GANG})
# (team's GPUs of the model held, model version or -1 when the wait is the team's own, the wait)
_KnownWait = tuple[int, int, tuple[Reason, str]]
_age_then_team = attrgetter("submit_time", "team")
_first = itemgetter(0)
SATURATED: ExplanationRow = (Reason.CAPACITY, "no free GPUs of this model", None, None, None)
_submit_time = attrgetter("submit_time")
HELD = (Reason.BUDGET, "held: the team's budget (or a policy) holds new jobs")


def run_cycle(
    *,
    now: float,
    cluster: Cluster,
    quotas: Iterable[Quota],
    pending: Sequence[PendingJob],
    running: Sequence[RunningJob],
    usage: Mapping[str, float] | None = None,
    config: PolicyConfig | None = None,
    previous: Sequence[Reservation] = (),
) -> CycleResult:
    """Decide which pending jobs start now, which running jobs are preempted, and why the rest wait.

    `previous`: the last cycle's reservations; read only with `PolicyConfig.keep_reservations` (or,
    for jobs due by their FIFO start, `PolicyConfig.fifo_bound`).
    """
    cycle = _Cycle(now, cluster, quotas, running, usage or {}, config or PolicyConfig())
    if (cycle.config.keep_reservations or cycle.config.fifo_bound) and previous:
        cycle.keep(previous, pending)
    cycle.admit_in_order(pending)
    cycle.reclaim()
    return cycle.result()


class _Segment:
    """One priority class's pending jobs, as the cycle takes them."""

    __slots__ = ("considered", "lines", "rank", "starving")

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.starving: list[PendingJob] = []  # by (submit time, team): their order is fixed
        self.lines: dict[str, list[PendingJob]] = defaultdict(list)  # each team's other jobs, by age
        self.considered: list[PendingJob] = []  # those other jobs in the order the heap took them


class _Cycle:
    """Working state of one cycle; thrown away when it returns."""

    def __init__(
        self,
        now: float,
        cluster: Cluster,
        quotas: Iterable[Quota],
        running: Sequence[RunningJob],
        usage: Mapping[str, float],
        config: PolicyConfig,
    ) -> None:
        self.now, self.config, self.usage, self.running = now, config, usage, running
        self.specs = {spec.name: spec for spec in config.classes}
        self.starvation_age = config.starvation_age_s  # this cycle's (see PolicyConfig.starvation_relative)
        self._oldest_cutoff = -math.inf  # jobs submitted by then get reservations of their own (reserve_oldest)
        # A job whose FIFO start is at or before this is due (PolicyConfig.fifo_bound): see `_due`.
        self.due_by = now + config.fifo_bound_lead_s if config.fifo_bound else -math.inf
        self._due_reserve_cutoff = math.inf  # due jobs submitted by then get reservations of their own
        self._kept: set[JobId] = set()  # jobs holding a reservation kept from the last cycle
        self.rank_of = {spec.name: spec.rank for spec in config.classes}
        self._shares: dict[tuple[str, str], tuple[int, float]] = {}
        self.index = FreeIndex(cluster.nodes, cluster.pool_teams)
        self.ledger = Ledger(quotas, running)
        self.reservations: dict[str, Reservation] = {}  # each pool's first
        self._aged_reservations: dict[str, list[Reservation]] = defaultdict(list)  # see reserve_after_s
        self.admitted: list[Admission] = []
        self.preempted: list[Preemption] = []
        self.waiting: dict[JobId, tuple[Reason, str]] = {}
        self.bulk_waiting: dict[JobId, ExplanationRow] = {}
        self._walltimes: dict[JobId, float] = {}  # of the jobs given a reservation
        self.reclaimers: list[PendingJob] = []
        self._failed: set[tuple[str, int, int, bool]] = set()
        self._failed_among: set[tuple[str, int, int, tuple[JobId, ...]]] = set()  # see _place_among_reservations
        self._shape_ok: dict[tuple[str, int, int], bool] = {}
        self._model_shape_ok: dict[tuple[str, int, int, str], bool] = {}
        # Quota verdicts depend only on (team, model, class, size) and on the model's state, which
        # changes only when a job of that model is admitted or preempted: cache them per version.
        self._model_version: dict[str, int] = defaultdict(int)
        self._verdicts: dict[tuple[str, str, str, int], tuple[int, QuotaVerdict]] = {}
        self._releases: Releases | None = None
        self._admitted_jobs: list[tuple[PendingJob, Placement]] = []
        # (team, model, class, GPUs per node, nodes) -> (team's GPUs held, model version or -1, wait):
        # a quota or shape wait of that group, valid while the team holds as many GPUs of the model and,
        # where the wait depended on the model's free GPUs, while the model's version is unchanged.
        self._known_waits: dict[tuple[str, str, str, int, int], _KnownWait] = {}
        self._segments_seen: list[_Segment] = []
        self._held: list[PendingJob] = []

    # -- ordering -------------------------------------------------------------------------

    def _spec(self, job: PendingJob) -> PriorityClassSpec:
        return self.specs.get(job.priority) or self.config.class_named(job.priority)

    def _share(self, job: PendingJob) -> float:
        # Cached per (team, model) until the team's holdings change; most jobs share their team's key.
        held = self.ledger.team_gpus[job.team]
        cached = self._shares.get((job.team, job.gpu_model))
        if cached is not None and cached[0] == held:
            return cached[1]
        quota = self.ledger.quota(job.team, job.gpu_model)
        share = usage_key(self.usage, self.ledger, job.team, quota.weight if quota else 1.0, self.config.half_life_s)
        self._shares[(job.team, job.gpu_model)] = (held, share)
        return share

    def _due(self, job: PendingJob) -> bool:
        """Whether the job has waited (nearly) as long as strict FIFO would have made it wait."""
        return job.fifo_start is not None and job.fifo_start <= self.due_by

    def _starving(self, job: PendingJob) -> bool:
        return self.now - job.submit_time >= self.starvation_age or self._due(job)

    def _head(self, job: PendingJob) -> tuple[int, float, float]:
        if self._starving(job):
            return (-self.rank_of[job.priority], -math.inf, job.submit_time)  # starving: by age, ahead of fair share
        share = self._share(job)
        if self.config.aging_s is not None:
            share /= 1.0 + (self.now - job.submit_time) / self.config.aging_s
        return (-self.rank_of[job.priority], share, job.submit_time)

    def admit_in_order(self, pending: Sequence[PendingJob]) -> None:
        for priority in {job.priority for job in pending} - self.rank_of.keys():
            self.config.class_named(priority)  # raises with the unknown name
        self._set_oldest_cutoff(pending)
        relative, head = self.config.starvation_relative, self.config.fifo_head
        if relative is not None or head:
            ages = [self.now - job.submit_time for job in pending if not job.held]
            if ages and relative is not None:
                self.starvation_age = min(self.starvation_age, relative * statistics.median(ages))
            if ages and head:
                oldest = max(self.config.fifo_head_after_s, heapq.nlargest(head, ages)[-1])
                self.starvation_age = min(self.starvation_age, oldest)
        if not self.config.explain:
            self._admit_by_heap(self._lines(pending), [])
            return
        # Within a class, every starving job goes before every other, by age (then team name, as the
        # heap's tie-break), whatever the fair shares do: that part of the order is fixed before the
        # cycle starts and needs no heap. The rest of the class goes by the heap, as before.
        known, waiting, used, version = self._known_waits, self.waiting, self.ledger.used, self._model_version
        for segment in self._segments(pending):
            for job in segment.starving:
                team, model = job.team, job.gpu_model
                seen = known.get((team, model, job.priority, job.gpus_per_node, job.nodes))
                if seen is not None and seen[0] == used[(team, model)] and (seen[1] == -1 or seen[1] == version[model]):
                    waiting[job.id] = seen[2]
                else:
                    self._consider(job, seen)
            self._admit_by_heap(segment.lines, segment.considered)

    def _admit_by_heap(self, lines: dict[str, list[PendingJob]], considered: list[PendingJob]) -> None:
        """Take the teams' lines in fair-share order; `considered` gets the jobs in the order they were taken."""
        heap = [(*self._head(line[0]), team) for team, line in lines.items()]
        heapq.heapify(heap)
        position = dict.fromkeys(lines, 0)
        fast = not self.config.explain
        known, waiting, used, version = self._known_waits, self.waiting, self.ledger.used, self._model_version
        team_gpus, shares, rank_of = self.ledger.team_gpus, self._shares, self.rank_of
        now, starvation_age, aging, due_by = self.now, self.starvation_age, self.config.aging_s, self.due_by
        while heap:
            team = heap[0][3]
            line, at = lines[team], position[team]
            # Keys of the other teams' heads stay as they are while this team's jobs are considered, so
            # the team keeps its turn for as long as its next head sorts before the runner-up.
            runner_up = min(heap[1:3], default=None)
            while True:
                job = line[at]
                considered.append(job)
                if fast and self._line_is_stuck(job):
                    self._wait_in_bulk(line[at:])
                    heapq.heappop(heap)
                    break
                model = job.gpu_model
                # A job identical to one of its team's that already had to wait, with nothing it depends
                # on changed since, waits for the same reason: most of a busy queue goes by this lookup.
                seen = known.get((team, model, job.priority, job.gpus_per_node, job.nodes))
                if seen is not None and seen[0] == used[(team, model)] and (seen[1] == -1 or seen[1] == version[model]):
                    waiting[job.id] = seen[2]
                else:
                    self._consider(job, seen)
                at += 1
                if at == len(line):
                    heapq.heappop(heap)
                    break
                job = line[at]
                # `_head`, written out for the ten thousand jobs of a busy cycle
                fifo_start = job.fifo_start
                if now - job.submit_time >= starvation_age or (fifo_start is not None and fifo_start <= due_by):
                    head = (-rank_of[job.priority], -math.inf, job.submit_time, team)
                else:
                    cached = shares.get((team, job.gpu_model))
                    share = cached[1] if cached is not None and cached[0] == team_gpus[team] else self._share(job)
                    if aging is not None:
                        share /= 1.0 + (now - job.submit_time) / aging
                    head = (-rank_of[job.priority], share, job.submit_time, team)
                if runner_up is not None and runner_up < head:
                    position[team] = at
                    heapq.heapreplace(heap, head)
                    break

    def _lines(self, pending: Sequence[PendingJob]) -> dict[str, list[PendingJob]]:
        """Each team's line by class and age; held jobs wait outside every line."""
        # Sorted by class rank, then age, as one stable sort by (-rank, submit time) would: by age
        # within each rank, the ranks highest first.
        by_rank: dict[int, list[PendingJob]] = defaultdict(list)
        rank_of = self.rank_of
        for job in pending:
            by_rank[rank_of[job.priority]].append(job)
        lines: dict[str, list[PendingJob]] = defaultdict(list)
        waiting = self.waiting
        for rank in sorted(by_rank, reverse=True):
            for job in sorted(by_rank[rank], key=_submit_time):
                if job.held:
                    waiting[job.id] = HELD
                else:
                    lines[job.team].append(job)
        return lines

    def _segments(self, pending: Sequence[PendingJob]) -> list[_Segment]:
        """Per class, highest first: its starving jobs by (age, team), and each team's other jobs by age."""
        by_rank: dict[int, list[PendingJob]] = defaultdict(list)
        rank_of = self.rank_of
        for job in pending:
            by_rank[rank_of[job.priority]].append(job)
        waiting, held = self.waiting, self._held
        now, starvation_age = self.now, self.starvation_age
        segments: list[_Segment] = []
        for rank in sorted(by_rank, reverse=True):
            segment = _Segment(rank)
            ordered = sorted(by_rank[rank], key=_submit_time)  # stable: a team's line keeps its order
            # Starving is a prefix of the class by age: `now - submit time` only shrinks along it.
            cut = bisect.bisect_left(ordered, True, key=lambda job: now - job.submit_time < starvation_age)
            on_hold = [job for job in ordered if job.held]
            for job in on_hold:
                waiting[job.id] = HELD
            held += on_hold
            starving = [job for job in ordered[:cut] if not job.held] if on_hold else ordered[:cut]
            if self.config.fifo_bound:  # due jobs starve too; FIFO starts grow with age, but are not bound to
                starving += [job for job in ordered[cut:] if not job.held and self._due(job)]
                starving.sort(key=_submit_time)
            ages = list(map(_submit_time, starving))
            if any(map(operator.eq, ages, ages[1:])):
                starving.sort(key=_age_then_team)  # the heap breaks ties of age by team name
            segment.starving = starving
            lines = segment.lines
            for job in ordered[cut:]:
                if not job.held and not self._due(job):
                    lines[job.team].append(job)
            segments.append(segment)
        self._segments_seen = segments
        return segments

    def _line_is_stuck(self, job: PendingJob) -> bool:
        """With no free GPUs and no guarantee left to reclaim, nothing behind this job can start either."""
        if self.index.free_by_model[job.gpu_model] > 0:
            return False
        quota = self.ledger.quota(job.team, job.gpu_model)
        return quota is None or self.ledger.used[(job.team, job.gpu_model)] >= quota.guarantee

    def _wait_in_bulk(self, jobs: Sequence[PendingJob]) -> None:
        # Only reached without explanations; a job of another model in the line is still considered.
        for job in jobs:
            if self.index.free_by_model[job.gpu_model] == 0 and not self.ledger.within_guarantee(job):
                self.bulk_waiting[job.id] = SATURATED
            else:
                self._consider(job)

    # -- one job --------------------------------------------------------------------------

    def _consider(self, job: PendingJob, seen: _KnownWait | None = None) -> None:
        """Admit the job, or say why it waits; `seen` is its group's last wait, if the group had one."""
        # A group that waited for other teams' unlendable guarantee, its own holdings as they were: its
        # own quota still lets it borrow, so only that guarantee needs checking again.
        if (
            seen is not None
            and seen[1] >= 0
            and seen[0] == self.ledger.used[(job.team, job.gpu_model)]
            and self._still_protected(job)
        ):
            return
        spec = self.specs[job.priority]
        if not self._shape_fits_somewhere(job):
            self._wait_as_group(job, Reason.NO_NODES, f"no healthy {job.gpu_model} pool has {self._shape(job)}", -1)
            return
        quota_reason, quota_detail, borrowing = self._verdict(job, spec)
        if quota_reason is not None:
            local = self.ledger.refused_by_own_quota(job, spec)
            self._wait_as_group(job, quota_reason, quota_detail, -1 if local else self._model_version[job.gpu_model])
            return
        spot = self._place(job)
        if spot is not None:
            self._admit(job, spot[0], spot[1], borrowing)
            return
        reason, detail = self._blocked(job, spec)
        self._wait(job, reason, detail)
        if reason in RECLAIMABLE:
            if self.config.backfill:
                self._reserve(job, spec)
            if self.ledger.within_guarantee(job):
                self.reclaimers.append(job)
        elif self.config.backfill and self._aged(job):  # kept off free GPUs by a reservation, and aged
            self._reserve(job, spec)

    def _still_protected(self, job: PendingJob) -> bool:
        detail = self.ledger.protected_refusal(job.gpu_model, job.gpus, self.index.free_by_model[job.gpu_model], job.team)
        if detail is None:
            return False
        self._wait_as_group(job, Reason.QUOTA, detail, self._model_version[job.gpu_model])
        return True

    def _wait_as_group(self, job: PendingJob, reason: Reason, detail: str, version: int) -> None:
        """Wait, and remember it for the identical jobs behind this one (see `_known_waits`)."""
        wait = self.waiting[job.id] = (reason, detail)
        group = (job.team, job.gpu_model, job.priority, job.gpus_per_node, job.nodes)
        self._known_waits[group] = (self.ledger.used[(job.team, job.gpu_model)], version, wait)

    def _verdict(self, job: PendingJob, spec: PriorityClassSpec) -> QuotaVerdict:
        key = (job.team, job.gpu_model, job.priority, job.gpus_per_node * job.nodes)
        version = self._model_version[job.gpu_model]
        cached = self._verdicts.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        verdict = self.ledger.verdict(job, spec, self.index.free_by_model[job.gpu_model])
        self._verdicts[key] = (version, verdict)
        return verdict

    def _wait(self, job: PendingJob, reason: Reason, detail: str) -> None:
        self.waiting[job.id] = (reason, detail)

    @staticmethod
    def _shape(job: PendingJob) -> str:
        if job.nodes == 1:
            return f"a node with {job.gpus_per_node} GPUs"
        return f"{job.nodes} nodes of exactly {job.gpus_per_node} GPUs (jobs over one node take whole nodes)"

    def _shape_fits_somewhere(self, job: PendingJob) -> bool:
        shape = (job.gpu_model, job.gpus_per_node, job.nodes, self.index.scope(job))
        known = self._model_shape_ok.get(shape)
        if known is None:
            known = self._model_shape_ok[shape] = self._shape_fits_any_pool(job)
        return known

    def _shape_fits_any_pool(self, job: PendingJob) -> bool:
        for pool in self.index.pools_for(job):
            key = (pool, job.gpus_per_node, job.nodes)
            if key not in self._shape_ok:
                self._shape_ok[key] = self.index.fits_shape(pool, job)
            if self._shape_ok[key]:
                return True
        return False

    def _place(self, job: PendingJob) -> tuple[str, Placement] | None:
        if self.index.free_by_model[job.gpu_model] < job.gpus:
            return None
        for pool in self.index.pools_for(job):
            reservation = self.reservations.get(pool)
            if pool in self._aged_reservations:
                placement = self._place_among_reservations(pool, job)
                if placement:
                    return pool, placement
                continue
            use_all = reservation is None or self.now + job.walltime_s <= reservation.start
            memo = (pool, job.gpus_per_node, job.nodes, use_all)
            if memo in self._failed:
                continue
            if reservation is not None and use_all:
                placement = self.index.place_with(pool, job, reservation.nodes)
            else:
                placement = self.index.place_unreserved(pool, job)
            if placement:
                return pool, placement
            self._failed.add(memo)
        return None

    def _pool_reservations(self, pool: str) -> list[Reservation]:
        first = self.reservations.get(pool)
        return ([first] if first is not None else []) + self._aged_reservations.get(pool, [])

    def _place_among_reservations(self, pool: str, job: PendingJob, also: Reservation | None = None) -> Placement | None:
        """Placement in a pool with several reservations: the nodes of those the job ends before (and of `also`)."""
        end = self.now + job.walltime_s
        held = [r for r in self._pool_reservations(pool) if end <= r.start or r is also or r.job_id == job.id]
        # Free GPUs only shrink while the cycle admits; they grow back only when a kept reservation ends
        # (`_admit`, which forgets these failures). So a shape that found no room among the same
        # reservations finds none again.
        memo = (pool, job.gpus_per_node, job.nodes, tuple(r.job_id for r in held))
        if memo in self._failed_among:
            return None
        usable = [n for r in held for n in r.nodes]
        placement = self.index.place_with(pool, job, usable) if usable else self.index.place_unreserved(pool, job)
        if placement is None:
            self._failed_among.add(memo)
        return placement

    def _set_oldest_cutoff(self, pending: Sequence[PendingJob]) -> None:
        count = self.config.fifo_bound_reservations
        if self.config.fifo_bound and count < len(pending):
            due = [job.submit_time for job in pending if not job.held and self._due(job)]
            self._due_reserve_cutoff = heapq.nsmallest(count, due)[-1] if len(due) > count else math.inf
            if count == 0:
                self._due_reserve_cutoff = -math.inf
        if self.config.reserve_oldest:
            times = [job.submit_time for job in pending if not job.held]
            if times:
                self._oldest_cutoff = heapq.nsmallest(self.config.reserve_oldest, times)[-1]

    def _aged(self, job: PendingJob) -> bool:
        """Whether a blocked job gets a reservation of its own (see PolicyConfig.reserve_after_s, reserve_oldest)."""
        after = self.config.reserve_after_s
        if job.submit_time <= self._oldest_cutoff or (self._due(job) and job.submit_time <= self._due_reserve_cutoff):
            return True
        return after is not None and self.now - job.submit_time >= after

    def _blocked(self, job: PendingJob, spec: PriorityClassSpec) -> tuple[Reason, str]:
        free = self.index.free_by_model[job.gpu_model]
        if free < job.gpus:
            return Reason.CAPACITY, f"{free} of the {job.gpus} {job.gpu_model} GPUs it needs are free"
        holder = self._reservation_in_the_way(job)
        if holder is not None:
            reason = Reason.PRIORITY if holder.rank > spec.rank else Reason.QUEUE
            return reason, (
                f"the free GPUs in pool {holder.pool} are held for job {holder.job_id}, expected to start at "
                f"t={holder.start:.0f}; this job would still be running then"
            )
        if job.nodes > 1:
            return Reason.GANG, f"{free} {job.gpu_model} GPUs are free, but not {self._shape(job)} in one pool"
        return Reason.FRAGMENTATION, f"{free} {job.gpu_model} GPUs are free, but no node has {job.gpus_per_node} free"

    def _reservation_in_the_way(self, job: PendingJob) -> Reservation | None:
        for pool in self.index.pools_for(job):
            if pool in self._aged_reservations:
                end = self.now + job.walltime_s
                for held in self._pool_reservations(pool):
                    if end > held.start and self._place_among_reservations(pool, job, held):
                        return held
                continue
            reservation = self.reservations.get(pool)
            memo = (pool, job.gpus_per_node, job.nodes, True)
            if reservation is None or memo in self._failed:
                continue
            if self.index.place_with(pool, job, reservation.nodes):
                return reservation
            self._failed.add(memo)
        return None

    # -- admission and reservation --------------------------------------------------------

    def _admit(self, job: PendingJob, pool: str, placement: Placement, borrowing: bool, preempts: tuple[JobId, ...] = ()) -> None:
        if job.id in self._kept:  # it starts: its kept reservation is over, and nodes it does not take are free again
            for held in self._aged_reservations.values():
                for reservation in [r for r in held if r.job_id == job.id]:
                    held.remove(reservation)
                    self.index.unreserve(n for n in reservation.nodes if n not in placement)
            self._kept.discard(job.id)
            self._failed_among.clear()
        self.index.take(placement)
        self.ledger.charge(job.team, job.gpu_model, job.gpus)
        self._model_version[job.gpu_model] += 1
        self.admitted.append(Admission(job.id, pool, placement, borrowing, preempts))
        self._admitted_jobs.append((job, placement))
        if self._releases is not None:
            self._releases.add(job.team, job.gpu_model, placement, self.now + job.walltime_s)

    @property
    def releases(self) -> Releases:
        if self._releases is None:
            self._releases = Releases(self.now)
            self._releases.add_running(self.running)
            for job, placement in self._admitted_jobs:
                self._releases.add(job.team, job.gpu_model, placement, self.now + job.walltime_s)
        return self._releases

    def keep(self, previous: Sequence[Reservation], pending: Sequence[PendingJob]) -> None:
        """Hold again the nodes of last cycle's reservations of aged jobs still pending, with fresh start times.

        Planned again from scratch, an aged job's reservation slides: each cycle may pick other nodes
        for it, and jobs ahead of it in fair order take each node as it frees. Kept, its nodes stay
        held until it runs. Its start is when the last of them will be free enough.
        """
        waiting = {job.id: job for job in pending if not job.held}
        self._set_oldest_cutoff(pending)
        for old in previous:
            job = waiting.get(old.job_id)
            if job is None or job.id in self._kept or not self._aged(job):
                continue
            if not self.config.keep_reservations and not self._due(job):
                continue
            nodes = [n for n in old.nodes if n in self.index.free and n not in self.index.reserved]
            if len(nodes) != len(old.nodes) or any(self.index.pool_of[n] != old.pool for n in nodes):
                continue  # a node left the pool or went unhealthy: plan again
            need = job.gpus_per_node
            start = max(self.releases.ready_at(self.index, n, need if job.nodes == 1 else self.index.size[n]) for n in nodes)
            if start == math.inf:
                continue
            self._aged_reservations[old.pool].append(
                Reservation(old.pool, job.id, old.nodes, start, self.specs[job.priority].rank)
            )
            self._walltimes[job.id] = job.walltime_s
            self._kept.add(job.id)
            self.index.reserve(nodes)

    def _reserve(self, job: PendingJob, spec: PriorityClassSpec) -> None:
        """The first blocked job of a pool gets its nodes held; later jobs may use them only if they end first."""
        if job.id in self._kept:
            return  # it holds last cycle's reservation still
        best: tuple[float, str, list[str]] | None = None
        aged = self._aged(job)
        for pool in self.index.pools_for(job):
            if (pool in self.reservations and not aged) or not self._shape_ok.get((pool, job.gpus_per_node, job.nodes)):
                continue
            plan = plan_reservation(self.index, self.releases, pool, job)
            if plan and (best is None or (plan[0], pool) < (best[0], best[1])):
                best = (plan[0], pool, plan[1])
        if best is None:
            return
        start, pool, nodes = best
        reservation = Reservation(pool, job.id, tuple(nodes), start, spec.rank)
        if pool in self.reservations:
            self._aged_reservations[pool].append(reservation)
        else:
            self.reservations[pool] = reservation
        self._walltimes[job.id] = job.walltime_s
        self.index.reserve(nodes)

    # -- reclaim --------------------------------------------------------------------------

    def reclaim(self) -> None:
        if not self.reclaimers or not self.running:
            return
        running: Iterable[RunningJob] = self.running
        if self.config.fifo_bound and self.config.fifo_bound_shields:
            lead = self.config.fifo_bound_lead_s
            running = [j for j in running if j.fifo_start is None or self.now < j.fifo_start - lead]
        victims = VictimIndex(running, self._victim_rank, self.now, self.config.min_victim_runtime_s)
        gone: set[JobId] = set()
        failed_shapes: set[tuple[str, int, int]] = set()
        for job in self.reclaimers[: self.config.max_reclaims_per_cycle]:
            shape = (job.gpu_model, job.gpus_per_node, job.nodes)
            if shape in failed_shapes or not self.ledger.within_guarantee(job):
                continue
            plan = plan_reclaim(
                job,
                self.index,
                victims,
                Eligible(job.team, self._borrowing_teams(job.gpu_model), frozenset(gone), self.ledger.department_mates(job.team)),
            )
            if plan is None:
                failed_shapes.add(shape)
                continue
            for victim in plan.victims:
                gone.add(victim.id)
                self.index.give_back(victim.placement)
                self.ledger.charge(victim.team, victim.gpu_model, -victim.gpus)
                self._model_version[victim.gpu_model] += 1
                why = (
                    f"reclaim: its GPUs were idle and marked reclaimable; team {job.team} needs them within its guarantee"
                    if victim.idle
                    else f"reclaim: team {job.team} takes back its guarantee"
                )
                self.preempted.append(Preemption(victim.id, why, job.id, victims.lost(victim)))
            self._admit(job, plan.pool, plan.placement, False, tuple(v.id for v in plan.victims))
            del self.waiting[job.id]

    def _victim_rank(self, priority: str) -> int | None:
        """The class's rank if it may be preempted at all; critical (and unknown) classes never are."""
        spec = self.specs.get(priority)
        return spec.rank if spec is not None and spec.preemptible else None

    def _borrowing_teams(self, model: str) -> frozenset[str]:
        return frozenset(team for (team, m), _ in self.ledger.used.items() if m == model and self.ledger.is_borrowing(team, m))

    # -- result ---------------------------------------------------------------------------

    def result(self) -> CycleResult:
        waiting = self._explain() if self.config.explain else self._bare()
        return CycleResult(self.admitted, self.preempted, waiting, self._all_reservations())

    def _all_reservations(self) -> list[Reservation]:
        return list(self.reservations.values()) + [r for held in self._aged_reservations.values() for r in held]

    def _bare(self) -> Explanations:
        rows: dict[JobId, ExplanationRow] = {
            job_id: (reason, detail, None, None, None) for job_id, (reason, detail) in self.waiting.items()
        }
        rows.update(dict.fromkeys(self.bulk_waiting, SATURATED))
        return Explanations(rows)

    def _explain(self) -> Explanations:
        reservations = self._all_reservations()
        estimator = StartEstimator(self.index, self.releases, reservations, self._walltimes)
        line = self._line()
        return explain_waiting(self.waiting, self.specs, line, self._held, self.ledger, estimator, reservations)

    def _line(self) -> list[PendingJob]:
        """The waiting jobs in the order the next cycle would consider them (held jobs stand outside the line).

        That order is (-class rank, fair share after this cycle or -inf when starving, submit time),
        equal keys in `waiting`'s order. Per class, the jobs are gathered in `waiting`'s order (the
        order this cycle took them in); the starving ones are already by age, so their sort only
        checks that, and only the others need their keys built and sorted.
        """
        shares: dict[tuple[str, str], float] = {}
        waiting, share = self.waiting, self._share
        starving_since, aging = self.now - self.starvation_age, self.config.aging_s
        line: list[PendingJob] = []
        for segment in self._segments_seen:
            old: list[PendingJob] = []
            young: list[tuple[tuple[float, float], PendingJob]] = []
            for job in itertools.chain(segment.starving, segment.considered):
                if job.id not in waiting:  # admitted
                    continue
                if job.submit_time <= starving_since or self._due(job):
                    old.append(job)
                    continue
                pair = (job.team, job.gpu_model)
                value = shares.get(pair)
                if value is None:
                    value = shares[pair] = share(job)
                if aging is not None:
                    young.append(((value / (1.0 + (self.now - job.submit_time) / aging), job.submit_time), job))
                    continue
                young.append(((value, job.submit_time), job))
            old.sort(key=_submit_time)
            young.sort(key=_first)
            line += old
            line += [job for _, job in young]
        return line
