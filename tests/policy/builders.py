"""Small builders for policy tests, and a cycle runner that checks the invariants every time."""

from __future__ import annotations

from collections.abc import Sequence

from jobs.policy import (
    Cluster,
    CycleResult,
    JobId,
    NodeState,
    PendingJob,
    PolicyConfig,
    Quota,
    RunningJob,
    run_cycle,
    violations,
)

NOW = 100_000.0
SUBMITTED = NOW - 3600


def nodes(
    count: int, pool: str = "p1", model: str = "a100", gpus: int = 8, free: int | None = None, prefix: str = ""
) -> list[NodeState]:
    prefix = prefix or f"{pool}-n"
    return [NodeState(f"{prefix}{i:02d}", pool, model, gpus, gpus if free is None else free) for i in range(count)]


def job(
    job_id: str,
    team: str = "vision",
    gpus: int = 1,
    nodes: int = 1,
    priority: str = "standard",
    submit: float = 0.0,
    walltime: float = 3600.0,
    model: str = "a100",
    held: bool = False,
) -> PendingJob:
    """A pending job; `submit` counts seconds from an hour before NOW, so jobs are not yet starving."""
    return PendingJob(job_id, team, model, gpus, nodes, priority, SUBMITTED + submit, walltime, held)


def running(
    job_id: str,
    team: str,
    placement: dict[str, int],
    priority: str = "standard",
    start: float = NOW - 7200,
    end: float = NOW + 3600,
    checkpoint_every: float | None = 1800.0,
    last_checkpoint: float | None = None,
    model: str = "a100",
) -> RunningJob:
    return RunningJob(job_id, team, model, placement, priority, start, end, checkpoint_every, last_checkpoint)


def quota(team: str, guarantee: int, limit: int, weight: float = 1.0, lendable: bool = True, model: str = "a100") -> Quota:
    return Quota(team, model, guarantee, limit, weight, lendable)


def cycle(
    node_list: Sequence[NodeState],
    quotas: Sequence[Quota],
    pending: Sequence[PendingJob],
    running_jobs: Sequence[RunningJob] = (),
    usage: dict[str, float] | None = None,
    now: float = NOW,
    config: PolicyConfig | None = None,
) -> CycleResult:
    """One fair-policy cycle; fails the test if any invariant is broken."""
    cluster = Cluster(list(node_list))
    result = run_cycle(now=now, cluster=cluster, quotas=quotas, pending=pending, running=running_jobs, usage=usage, config=config)
    assert violations(cluster, quotas, pending, running_jobs, result) == []
    assert {a.job_id for a in result.admitted} | set(result.waiting) == {j.id for j in pending}
    return result


def admitted_ids(result: CycleResult) -> list[JobId]:
    return [a.job_id for a in result.admitted]
