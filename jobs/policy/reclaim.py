"""Reclaim: free GPUs for a team's within-guarantee demand by preempting borrowers.

A victim belongs to another team that is borrowing (holds more than its guarantee) in that GPU
model, or was marked reclaimable by the telemetry guard for idle GPUs (`RunningJob.idle`); it is of a
preemptible class and has run at least the minimum runtime (so a job never bounces straight back
out). Victims are compared by (whether any of them is busy, worst class they include, GPU-seconds of
work lost since their last checkpoint): idle-marked jobs go first, the preemptible class before
standard, and among equals the plan that throws away the least work wins.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from jobs.policy.model import JobId, PendingJob, RunningJob
from jobs.policy.placement import FreeIndex

Cost = tuple[int, int, float]  # (1 if any victim is busy, highest class rank among the victims, lost GPU-seconds)


@dataclass(frozen=True, slots=True)
class ReclaimPlan:
    """Where the reclaiming job goes and whom it displaces."""

    pool: str
    placement: dict[str, int]
    victims: tuple[RunningJob, ...]
    cost: Cost


Entry = tuple[int, int, float, int, RunningJob]  # (1 if busy, class rank, lost GPU-seconds, GPUs on the node, job)


class VictimIndex:
    """Running jobs that could ever be victims this cycle, per node, cheapest first.

    Class and runtime are fixed for the cycle, so they are checked once here; whether the job's team
    still borrows, and whose job is reclaiming, are checked per plan. `freeable` bounds what a node can
    give, so most nodes are passed over without looking at their jobs; a node's jobs are costed and
    sorted the first time a plan looks at them.
    """

    def __init__(
        self, running: Iterable[RunningJob], rank_of: Callable[[str], int | None], now: float, min_runtime_s: float
    ) -> None:
        self.now = now
        self._jobs_on: dict[str, list[tuple[int, int, RunningJob]]] = defaultdict(list)
        self._entries: dict[str, list[Entry]] = {}
        self.freeable: dict[str, int] = defaultdict(int)
        self._lost: dict[JobId, float] = {}
        self.pinned: set[str] = set()  # nodes holding a job that can never be a victim
        self._gpus: dict[JobId, int] = {}
        ranks: dict[str, int | None] = {}
        jobs_on, freeable, pinned = self._jobs_on, self.freeable, self.pinned
        sizes = self._gpus  # each candidate's GPUs, so that its lost work needs no sum of its placement
        for job in running:
            if job.priority not in ranks:
                ranks[job.priority] = rank_of(job.priority)
            rank = ranks[job.priority]
            if rank is None or now - job.start_time < min_runtime_s:
                pinned.update(job.placement)
                continue
            total = 0
            for node, gpus in job.placement.items():
                jobs_on[node].append((rank, gpus, job))
                freeable[node] += gpus
                total += gpus
            sizes[job.id] = total

    def lost(self, job: RunningJob) -> float:
        """GPU-seconds of work a preemption of this (candidate) job throws away."""
        lost = self._lost.get(job.id)
        if lost is None:
            gpus = self._gpus.get(job.id)
            # RunningJob.lost_work, with a candidate's GPUs counted once at the start
            lost = job.lost_work(self.now) if gpus is None else max(0.0, self.now - job.checkpointed_at(self.now)) * gpus
            self._lost[job.id] = lost
        return lost

    def jobs_on(self, node: str) -> list[tuple[int, int, RunningJob]]:
        """(class rank, GPUs on the node, job) of the node's candidates, in no particular order."""
        return self._jobs_on.get(node, [])

    def on_node(self, node: str) -> list[Entry]:
        entries = self._entries.get(node)
        if entries is None:
            entries = [(0 if job.idle else 1, rank, self.lost(job), gpus, job) for rank, gpus, job in self._jobs_on.get(node, ())]
            entries.sort(key=lambda e: (e[0], e[1], e[2]))
            self._entries[node] = entries
        return entries


@dataclass(frozen=True, slots=True)
class Eligible:
    """Who may lose GPUs to this reclaim: jobs of borrowing teams other than the reclaiming one, not already
    chosen; `spared` (the reclaiming team's department mates) only when no plan can be made without them."""

    team: str
    borrowing: frozenset[str]
    gone: frozenset[JobId]
    spared: frozenset[str] = frozenset()

    def __call__(self, victim: RunningJob) -> bool:
        return (
            victim.team != self.team
            and victim.team not in self.spared
            and (victim.idle or victim.team in self.borrowing)
            and victim.id not in self.gone
        )


def _single_node_plan(
    index: FreeIndex, victims: VictimIndex, node: str, job: PendingJob, eligible: Eligible
) -> tuple[Cost, list[RunningJob]] | None:
    need = job.gpus_per_node - index.free[node]
    if need > victims.freeable[node]:
        return None
    chosen: list[RunningJob] = []
    busy, worst, lost = 0, 0, 0.0
    for is_busy, rank, work, gpus, victim in victims.on_node(node):
        if need <= 0:
            break
        if eligible(victim):
            chosen.append(victim)
            busy, worst, lost, need = max(busy, is_busy), max(worst, rank), lost + work, need - gpus
    return ((busy, worst, lost), chosen) if need <= 0 else None


def _whole_node_worst(index: FreeIndex, victims: VictimIndex, node: str, eligible: Eligible) -> tuple[int, int] | None:
    """(1 if any job on it is busy, the highest class rank) a whole-node reclaim of `node` would preempt,
    or None if it cannot be had."""
    if node in victims.pinned or index.free[node] + victims.freeable[node] < index.size[node]:
        return None  # a protected job, or GPUs held by something outside the portal
    busy, worst = 0, 0
    for rank, _, victim in victims.jobs_on(node):
        if not eligible(victim):
            return None
        busy, worst = max(busy, 0 if victim.idle else 1), max(worst, rank)
    return busy, worst


def _whole_node_options(
    job: PendingJob, pool: str, index: FreeIndex, victims: VictimIndex, eligible: Eligible
) -> list[tuple[Cost, str, list[RunningJob]]]:
    """Whole nodes that could be freed for a gang, costed; only those that can be among the cheapest.

    Cost compares (busy, worst class) first, so a node whose (busy, worst class) is above the gang's
    n-th smallest can never be chosen, and its jobs' lost work is not worked out.
    """
    found: list[tuple[tuple[int, int], str]] = []
    for node in index.pool_nodes[pool]:
        if index.size[node] == job.gpus_per_node:
            worst = _whole_node_worst(index, victims, node, eligible)
            if worst is not None:
                found.append((worst, node))
    if len(found) < job.nodes:
        return []
    cutoff = sorted(worst for worst, _ in found)[job.nodes - 1]
    options: list[tuple[Cost, str, list[RunningJob]]] = []
    for worst, node in found:
        if worst <= cutoff:
            entries = victims.on_node(node)
            options.append(((*worst, sum(e[2] for e in entries)), node, [e[4] for e in entries]))
    return options


def plan_reclaim(job: PendingJob, index: FreeIndex, victims: VictimIndex, eligible: Eligible) -> ReclaimPlan | None:
    """The cheapest way to make room for `job`, or None if borrowers cannot make enough room.

    Borrowers outside the reclaiming team's department go first: its department mates are taken
    only when no plan can be made without them.
    """
    if eligible.spared:
        plan = _cheapest(job, index, victims, eligible)
        if plan is not None:
            return plan
        eligible = replace(eligible, spared=frozenset())
    return _cheapest(job, index, victims, eligible)


def _cheapest(job: PendingJob, index: FreeIndex, victims: VictimIndex, eligible: Eligible) -> ReclaimPlan | None:
    best: ReclaimPlan | None = None
    for pool in index.pools_for(job):
        plan = _plan_in_pool(job, pool, index, victims, eligible)
        if plan and (best is None or plan.cost < best.cost):
            best = plan
    return best


def _plan_in_pool(job: PendingJob, pool: str, index: FreeIndex, victims: VictimIndex, eligible: Eligible) -> ReclaimPlan | None:
    options: list[tuple[Cost, str, list[RunningJob]]] = []
    if job.nodes > 1:
        options = _whole_node_options(job, pool, index, victims, eligible)
    else:
        for node in index.pool_nodes[pool]:
            if index.size[node] >= job.gpus_per_node:
                found = _single_node_plan(index, victims, node, job, eligible)
                if found:
                    options.append((found[0], node, found[1]))
    if len(options) < job.nodes:
        return None
    options.sort(key=lambda o: (o[0], o[1]))
    chosen = options[: job.nodes]
    unique = {v.id: v for _, _, vs in chosen for v in vs}
    cost = (
        max((c[0] for c, _, _ in chosen), default=0),
        max((c[1] for c, _, _ in chosen), default=0),
        sum(victims.lost(v) for v in unique.values()),
    )
    return ReclaimPlan(pool, {node: job.gpus_per_node for _, node, _ in chosen}, tuple(unique.values()), cost)
