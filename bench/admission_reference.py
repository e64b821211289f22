"""A bare admission loop, the yardstick for bench/admission_cycle.py.

What any grid scheduler does at the least, and nothing more: jobs sorted by their team's usage (then
age), each team held to its GPU limit per model, a single-node job on the fullest node that fits (best
fit from free-GPU buckets), a multi-node job on whole free nodes of one pool. No priority classes, no
guarantees or borrowing, no reservations, no reclaim, no explanations. It reads the same snapshot as
the portal's cycle (`jobs.policy` data) and builds its own index from it on every call, as the portal's
cycle does, so the two timings compare like with like.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice

from jobs.policy import JobId, NodeState, PendingJob, Quota, RunningJob


def reference_cycle(
    nodes: Iterable[NodeState],
    quotas: Iterable[Quota],
    pending: Sequence[PendingJob],
    running: Iterable[RunningJob],
    usage: Mapping[str, float],
) -> list[tuple[JobId, dict[str, int]]]:
    """The jobs started now and where: [(job id, {node: GPUs})]."""
    # (pool, free GPUs) -> nodes with exactly that many free; dicts as ordered sets (O(1) moves).
    buckets: dict[tuple[str, int], dict[str, None]] = defaultdict(dict)
    free: dict[str, int] = {}
    size: dict[str, int] = {}
    pool_of: dict[str, str] = {}
    pools: dict[str, list[str]] = defaultdict(list)
    free_of_model: dict[str, int] = defaultdict(int)
    for node in nodes:
        if node.gpu_model not in pools or node.pool not in pools[node.gpu_model]:
            pools[node.gpu_model].append(node.pool)
        if node.healthy:
            free[node.name], size[node.name], pool_of[node.name] = node.free, node.gpus, node.pool
            buckets[(node.pool, node.free)][node.name] = None
            free_of_model[node.gpu_model] += node.free
    widest = max(size.values(), default=0)
    limit = {(q.team, q.gpu_model): q.limit for q in quotas}
    used: dict[tuple[str, str], int] = defaultdict(int)
    for holder in running:
        used[(holder.team, holder.gpu_model)] += sum(holder.placement.values())

    started: list[tuple[JobId, dict[str, int]]] = []
    order = sorted((j for j in pending if not j.held), key=lambda j: (usage.get(j.team, 0.0), j.submit_time))
    for job in order:
        key = (job.team, job.gpu_model)
        gpus = job.gpus_per_node * job.nodes
        if used[key] + gpus > limit.get(key, 0) or free_of_model[job.gpu_model] < gpus:
            continue
        placement = _place(job, pools.get(job.gpu_model, []), buckets, size, widest)
        if placement is None:
            continue
        for name, taken in placement.items():
            del buckets[(pool_of[name], free[name])][name]
            free[name] -= taken
            buckets[(pool_of[name], free[name])][name] = None
        used[key] += gpus
        free_of_model[job.gpu_model] -= gpus
        started.append((job.id, placement))
    return started


def _place(
    job: PendingJob, pools: list[str], buckets: dict[tuple[str, int], dict[str, None]], size: dict[str, int], widest: int
) -> dict[str, int] | None:
    if job.nodes == 1:  # best fit: the fewest free GPUs that still hold the job, over the model's pools
        for free in range(job.gpus_per_node, widest + 1):
            for pool in pools:
                bucket = buckets.get((pool, free))
                if bucket:
                    return {next(reversed(bucket)): job.gpus_per_node}
        return None
    for pool in pools:  # a gang takes whole free nodes of its per-node size, all in one pool
        candidates = (n for n in reversed(buckets.get((pool, job.gpus_per_node), {})) if size[n] == job.gpus_per_node)
        whole = list(islice(candidates, job.nodes))
        if len(whole) >= job.nodes:
            return dict.fromkeys(whole[: job.nodes], job.gpus_per_node)
    return None
