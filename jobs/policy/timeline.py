"""When GPUs come back: reservations for blocked jobs and start estimates for waiting ones.

Both read the same timeline: every running job (and every job admitted this cycle) ends at its
expected end, then nothing else changes. Overdue jobs are taken to end now.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping

from jobs.policy.model import JobId, PendingJob, Reservation, RunningJob
from jobs.policy.placement import FreeIndex


class Releases:
    """Expected ends of the jobs holding GPUs, per node and per (team, model)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.by_node: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self.by_key: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)

    def add(self, team: str, model: str, placement: Mapping[str, int], end: float) -> None:
        end = max(end, self.now)
        for node, gpus in placement.items():
            self.by_node[node].append((end, gpus))
        self.by_key[(team, model)].append((end, sum(placement.values())))

    def add_running(self, jobs: Iterable[RunningJob]) -> None:
        # `add` for each job, written out: a busy grid has thousands of running jobs per cycle.
        now, by_node, by_key = self.now, self.by_node, self.by_key
        for job in jobs:
            end = job.expected_end
            if end < now:
                end = now
            total = 0
            for node, gpus in job.placement.items():
                by_node[node].append((end, gpus))
                total += gpus
            by_key[(job.team, job.gpu_model)].append((end, total))

    def ready_at(self, index: FreeIndex, node: str, gpus: int) -> float:
        """When `node` will have `gpus` free, were nothing else started on it."""
        free = index.free[node]
        if free >= gpus:
            return self.now
        for end, freed in sorted(self.by_node.get(node, ())):
            free += freed
            if free >= gpus:
                return end
        return float("inf")  # GPUs held by something the timeline does not know (e.g. outside the portal)


def plan_reservation(index: FreeIndex, releases: Releases, pool: str, job: PendingJob) -> tuple[float, list[str]] | None:
    """The earliest start for `job` in `pool` from the timeline, and the nodes it would take."""
    if job.nodes == 1:
        options = [
            (releases.ready_at(index, n, job.gpus_per_node), n)
            for n in index.pool_nodes[pool]
            if n not in index.reserved and index.size[n] >= job.gpus_per_node
        ]
        best = min(options, default=None)
        return None if best is None or best[0] == float("inf") else (best[0], [best[1]])
    options = sorted(
        (releases.ready_at(index, n, index.size[n]), n)
        for n in index.pool_nodes[pool]
        if n not in index.reserved and index.size[n] == job.gpus_per_node
    )
    if len(options) < job.nodes or options[job.nodes - 1][0] == float("inf"):
        return None
    chosen = options[: job.nodes]
    return chosen[-1][0], [n for _, n in chosen]


INF = float("inf")


class StartEstimator:
    """Earliest start each waiting job could get from the timeline (an optimistic, documented guess).

    Per pool it keeps, for every GPU count, the earliest time one node has that many free, and the
    sorted times nodes become wholly free. Reserved nodes count as busy until their reserved job is
    expected to end. Other waiting jobs are not simulated, so the estimate is a lower bound.
    """

    def __init__(
        self, index: FreeIndex, releases: Releases, reservations: Iterable[Reservation], walltimes: Mapping[JobId, float]
    ) -> None:
        self.index = index
        self.releases = releases
        held_until = {n: r.start + walltimes.get(r.job_id, 0.0) for r in reservations for n in r.nodes}
        self.single: dict[str, list[float]] = {}
        self.whole: dict[tuple[str, int], list[float]] = defaultdict(list)
        profile_of = self._node_profile
        for pool, nodes in index.pool_nodes.items():
            width = index.max_size[pool]
            profiles = []
            whole: dict[int, list[float]] = defaultdict(list)
            for node in nodes:
                profile = profile_of(node)
                if node in held_until:
                    profile = [max(at, held_until[node]) for at in profile]
                whole[len(profile)].append(profile[-1])
                if len(profile) < width:
                    profile += [INF] * (width - len(profile))
                profiles.append(profile)
            for size, times in whole.items():
                self.whole[(pool, size)] += times
            self.single[pool] = [INF, *(min(column) for column in zip(*profiles, strict=True))]
        for times in self.whole.values():
            times.sort()
        self._team_cache: dict[tuple[str, str], tuple[list[float], list[int]]] = {}
        self._shape_cache: dict[tuple[str, int, int, str], float | None] = {}

    def _node_profile(self, node: str) -> list[float]:
        """Time at which the node has 1, 2, … size GPUs free (a new list)."""
        size, free = self.index.size[node], self.index.free[node]
        now = self.releases.now
        if free >= size:
            return [now] * size
        profile = [now] * free
        for end, freed in sorted(self.releases.by_node.get(node, ())):
            profile += [end] * freed
        if len(profile) < size:
            profile += [INF] * (size - len(profile))
        elif len(profile) > size:
            del profile[size:]
        return profile

    def capacity_start(self, job: PendingJob) -> float | None:
        shape = (job.gpu_model, job.gpus_per_node, job.nodes, self.index.scope(job))
        if shape not in self._shape_cache:
            starts = [self._pool_start(pool, job) for pool in self.index.pools_for(job)]
            best = min(starts, default=float("inf"))
            self._shape_cache[shape] = None if best == float("inf") else best
        return self._shape_cache[shape]

    def _pool_start(self, pool: str, job: PendingJob) -> float:
        if job.nodes == 1:
            profile = self.single.get(pool, [])  # a pool whose nodes are all unhealthy has none
            return profile[job.gpus_per_node] if job.gpus_per_node < len(profile) else float("inf")
        times = self.whole.get((pool, job.gpus_per_node), [])
        return times[job.nodes - 1] if len(times) >= job.nodes else float("inf")

    def quota_start(self, team: str, model: str, must_release: int) -> float | None:
        """When the team's own jobs will have given back `must_release` GPUs of `model`."""
        if must_release <= 0:
            return self.releases.now
        if (team, model) not in self._team_cache:
            ends = sorted(self.releases.by_key.get((team, model), ()))
            self._team_cache[(team, model)] = ([e for e, _ in ends], list(itertools.accumulate(g for _, g in ends)))
        times, cumulative = self._team_cache[(team, model)]
        at = bisect.bisect_left(cumulative, must_release)
        return times[at] if at < len(times) else None
