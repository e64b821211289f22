"""The first admission rule: FIFO within each team's hard GPU limit, gangs placed all-or-nothing.

Pure: plain data in, decisions out. Within a team and GPU model the oldest job goes first and a
blocked head blocks the jobs behind it; teams never block each other. A job is placed on one pool,
on-premises pools before cloud ones, best fit first so whole nodes stay free for large jobs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WaitingJob:
    id: int
    team_id: int
    gpu_model: str
    gpus_per_node: int
    nodes: int

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.nodes


@dataclass
class FreeNode:
    name: str
    pool: str
    pool_is_cloud: bool
    gpu_model: str
    free: int
    size: int


@dataclass(frozen=True)
class Admit:
    job_id: int
    pool: str
    placement: dict[str, int]


@dataclass
class Decisions:
    admitted: list[Admit] = field(default_factory=list)
    waiting: dict[int, tuple[str, str]] = field(default_factory=dict)  # job id -> (reason, detail)


def place(job: WaitingJob, nodes: Iterable[FreeNode]) -> tuple[str, dict[str, int]] | None:
    """Nodes for a gang, all in one pool, or None. Best fit: the fullest nodes that still fit."""
    by_pool: dict[tuple[bool, str], list[FreeNode]] = {}
    for node in nodes:
        if node.gpu_model == job.gpu_model and node.free >= job.gpus_per_node:
            by_pool.setdefault((node.pool_is_cloud, node.pool), []).append(node)
    for (_, pool), candidates in sorted(by_pool.items()):
        if len(candidates) >= job.nodes:
            chosen = sorted(candidates, key=lambda n: (n.free, n.name))[: job.nodes]
            return pool, {n.name: job.gpus_per_node for n in chosen}
    return None


def _why_not(job: WaitingJob, nodes: list[FreeNode]) -> tuple[str, str]:
    same = [n for n in nodes if n.gpu_model == job.gpu_model]
    if not same:
        return "no_nodes", f"no healthy {job.gpu_model} node is schedulable"
    free = sum(n.free for n in same)
    if free >= job.gpus:
        return "fragmentation", f"{free} {job.gpu_model} GPUs are free but not {job.nodes} × {job.gpus_per_node} on whole nodes"
    return "capacity", f"{free} of the {job.gpus} {job.gpu_model} GPUs it needs are free"


def admit_fifo(
    waiting: Iterable[WaitingJob],
    nodes: list[FreeNode],
    used: Mapping[tuple[int, str], int],
    limits: Mapping[tuple[int, str], int],
    default_limit: int,
) -> Decisions:
    """Walk the queue oldest first; admit each job whose team is under its limit and that fits."""
    decisions = Decisions()
    used = dict(used)
    blocked: dict[tuple[int, str], int] = {}
    for job in waiting:
        key = (job.team_id, job.gpu_model)
        if key in blocked:
            decisions.waiting[job.id] = ("queue", f"behind job #{blocked[key]} of the same team")
            continue
        limit = limits.get(key, default_limit)
        if used.get(key, 0) + job.gpus > limit:
            decisions.waiting[job.id] = (
                "quota",
                f"team uses {used.get(key, 0)} of its {limit}-GPU {job.gpu_model} limit; this job needs {job.gpus}",
            )
            blocked[key] = job.id
            continue
        spot = place(job, nodes)
        if spot is None:
            decisions.waiting[job.id] = _why_not(job, nodes)
            blocked[key] = job.id
            continue
        pool, placement = spot
        for node in nodes:
            if node.name in placement:
                node.free -= placement[node.name]
        used[key] = used.get(key, 0) + job.gpus
        decisions.admitted.append(Admit(job.id, pool, placement))
    return decisions
