"""Where a gang fits: free GPUs indexed per (pool, free-GPU count) for best-fit placement.

A job of up to one node's GPUs goes on one node, the fullest one that still fits (best fit), so
empty nodes stay whole for large jobs. A larger job takes whole free nodes, all in one pool. Each
bucket is a heap of node names with lazy deletion: a lookup costs O(GPUs per node · log n), never
a scan of the nodes.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from jobs.policy.model import NodeState, PendingJob

Placement = dict[str, int]


class FreeIndex:
    """Free GPUs of the healthy nodes, with reserved nodes set apart from ordinary placement."""

    def __init__(self, nodes: Iterable[NodeState], pool_teams: Mapping[str, frozenset[str]] | None = None) -> None:
        self.pool_teams = dict(pool_teams or {})
        self.free: dict[str, int] = {}
        self.size: dict[str, int] = {}
        self.pool_of: dict[str, str] = {}
        self.reserved: set[str] = set()
        self.free_by_model: dict[str, int] = defaultdict(int)
        self.pool_model: dict[str, str] = {}
        self.pool_nodes: dict[str, list[str]] = defaultdict(list)
        self.max_size: dict[str, int] = defaultdict(int)
        self._cloud: dict[str, bool] = {}
        self._counts: dict[tuple[str, int], int] = defaultdict(int)
        self._heaps: dict[tuple[str, int], list[str]] = defaultdict(list)
        self._whole_counts: dict[tuple[str, int], int] = defaultdict(int)
        self._whole_heaps: dict[tuple[str, int], list[str]] = defaultdict(list)
        for node in nodes:
            self._add(node)
        for heaps in (self._heaps, self._whole_heaps):  # filled in node order by `_add`; made heaps once
            for heap in heaps.values():
                heapq.heapify(heap)
        self.pools_by_model: dict[str, list[str]] = defaultdict(list)
        for pool in sorted(self.pool_model, key=lambda p: (self._cloud[p], p)):
            self.pools_by_model[self.pool_model[pool]].append(pool)

    def pools_for(self, job: PendingJob) -> Sequence[str]:
        """The pools of the job's model its team may use, on-premises first."""
        pools = self.pools_by_model.get(job.gpu_model, ())
        if not self.pool_teams:
            return pools
        return [p for p in pools if (teams := self.pool_teams.get(p)) is None or job.team in teams]

    def scope(self, job: PendingJob) -> str:
        """What besides its shape decides where a job may go: its team where some pools are only some teams'."""
        return job.team if self.pool_teams else ""

    def _add(self, node: NodeState) -> None:
        self.pool_model[node.pool] = node.gpu_model
        self._cloud[node.pool] = self._cloud.get(node.pool, False) or node.is_cloud
        if not node.healthy:
            return
        free = max(0, min(node.free, node.gpus))
        self.free[node.name] = free
        self.size[node.name] = node.gpus
        self.pool_of[node.name] = node.pool
        self.pool_nodes[node.pool].append(node.name)
        self.max_size[node.pool] = max(self.max_size[node.pool], node.gpus)
        self.free_by_model[node.gpu_model] += free
        bucket = (node.pool, free)
        self._counts[bucket] += 1
        self._heaps[bucket].append(node.name)
        if free == node.gpus:
            self._whole_counts[bucket] += 1
            self._whole_heaps[bucket].append(node.name)

    # -- bucket bookkeeping ---------------------------------------------------------------

    def _enter(self, name: str) -> None:
        pool, free = self.pool_of[name], self.free[name]
        self._counts[(pool, free)] += 1
        heapq.heappush(self._heaps[(pool, free)], name)
        if free == self.size[name]:
            self._whole_counts[(pool, free)] += 1
            heapq.heappush(self._whole_heaps[(pool, free)], name)

    def _leave(self, name: str) -> None:
        pool, free = self.pool_of[name], self.free[name]
        self._counts[(pool, free)] -= 1
        if free == self.size[name]:
            self._whole_counts[(pool, free)] -= 1

    def _valid(self, name: str, free: int, whole: bool) -> bool:
        if name in self.reserved or self.free[name] != free:
            return False
        return not whole or free == self.size[name]

    def _peek(self, heap: list[str], free: int, whole: bool) -> str:
        while not self._valid(heap[0], free, whole):
            heapq.heappop(heap)
        return heap[0]

    def _take_from(self, heap: list[str], free: int, count: int) -> list[str]:
        """The `count` smallest valid names of a whole-node heap; stale entries are dropped on the way."""
        chosen: list[str] = []
        while len(chosen) < count:
            name = heapq.heappop(heap)
            if self._valid(name, free, True) and name not in chosen:
                chosen.append(name)
        for name in chosen:  # taking happens in `take`; the names go back until then
            heapq.heappush(heap, name)
        return chosen

    # -- changes ------------------------------------------------------------------------

    def take(self, placement: Mapping[str, int]) -> None:
        self._shift(placement, -1)

    def give_back(self, placement: Mapping[str, int]) -> None:
        """Free the GPUs of a stopped job; GPUs on nodes no longer healthy are not free."""
        self._shift({n: g for n, g in placement.items() if n in self.free}, +1)

    def _shift(self, placement: Mapping[str, int], sign: int) -> None:
        for name, gpus in placement.items():
            if name not in self.reserved:
                self._leave(name)
            new = self.free[name] + sign * gpus
            if not 0 <= new <= self.size[name]:
                raise ValueError(f"node {name} would have {new} free GPUs")
            self.free[name] = new
            self.free_by_model[self.pool_model[self.pool_of[name]]] += sign * gpus
            if name not in self.reserved:
                self._enter(name)

    def reserve(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self.reserved:
                self._leave(name)
                self.reserved.add(name)

    def unreserve(self, names: Iterable[str]) -> None:
        for name in names:
            if name in self.reserved:
                self.reserved.discard(name)
                self._enter(name)

    # -- queries ------------------------------------------------------------------------

    def fits_shape(self, pool: str, job: PendingJob) -> bool:
        """Could the pool ever host this shape, were it empty?"""
        if job.nodes == 1:
            return self.max_size[pool] >= job.gpus_per_node
        return sum(1 for n in self.pool_nodes[pool] if self.size[n] == job.gpus_per_node) >= job.nodes

    def place_unreserved(self, pool: str, job: PendingJob) -> Placement | None:
        if job.nodes == 1:
            for free in range(job.gpus_per_node, self.max_size[pool] + 1):
                if self._counts.get((pool, free), 0) > 0:
                    return {self._peek(self._heaps[(pool, free)], free, False): job.gpus_per_node}
            return None
        key = (pool, job.gpus_per_node)
        if self._whole_counts.get(key, 0) < job.nodes:
            return None
        return dict.fromkeys(self._take_from(self._whole_heaps[key], job.gpus_per_node, job.nodes), job.gpus_per_node)

    def place_with(self, pool: str, job: PendingJob, extra: Iterable[str]) -> Placement | None:
        """Placement that may also use the reserved nodes `extra`, which are tried first."""
        extra = [n for n in extra if self.pool_of[n] == pool]
        if job.nodes == 1:
            fitting = [n for n in extra if self.free[n] >= job.gpus_per_node]
            if fitting:
                return {min(fitting, key=lambda n: (self.free[n], n)): job.gpus_per_node}
            return self.place_unreserved(pool, job)
        whole = [n for n in extra if self.free[n] == self.size[n] == job.gpus_per_node][: job.nodes]
        rest = job.nodes - len(whole)
        key = (pool, job.gpus_per_node)
        if rest and self._whole_counts.get(key, 0) < rest:
            return None
        if rest:
            whole += self._take_from(self._whole_heaps[key], job.gpus_per_node, rest)
        return dict.fromkeys(whole, job.gpus_per_node)

    def whole_free(self, pool: str, size: int) -> int:
        return self._whole_counts.get((pool, size), 0)
