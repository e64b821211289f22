"""Randomised cycles (fixed seeds): limits, node capacity and single admission always hold."""

from __future__ import annotations

import random

import pytest

from jobs.policy import Cluster, NodeState, PendingJob, PolicyConfig, Quota, RunningJob, run_cycle, violations

TEAMS = ("vision", "render", "nlp", "bio")
CLASSES = ("critical", "standard", "preemptible")


def _snapshot(rng: random.Random) -> tuple[list[NodeState], list[Quota], list[PendingJob], list[RunningJob]]:
    grid: list[NodeState] = []
    busy: list[RunningJob] = []
    for i in range(rng.randint(1, 12)):
        pool, model = rng.choice((("east", "a100"), ("west", "a100"), ("hop", "h100")))
        free = 8
        while free and rng.random() < 0.6:
            gpus = rng.randint(1, free)
            busy.append(
                RunningJob(f"r{len(busy)}", rng.choice(TEAMS), model, {f"n{i}": gpus}, rng.choice(CLASSES), rng.uniform(0, 9000),
                           rng.uniform(10_000, 20_000), rng.choice((None, 600.0, 1800.0)))
            )  # fmt: skip
            free -= gpus
        grid.append(NodeState(f"n{i}", pool, model, 8, free, healthy=rng.random() > 0.1))
    quotas = []
    for team in TEAMS:
        for model in ("a100", "h100"):
            guarantee = rng.randint(0, 16)
            quotas.append(
                Quota(team, model, guarantee, guarantee + rng.randint(0, 48), rng.choice((1.0, 2.0)), rng.random() > 0.3)
            )
    pending = [
        PendingJob(f"p{j}", rng.choice(TEAMS), rng.choice(("a100", "h100")), *rng.choice(((1, 1), (2, 1), (4, 1), (8, 1), (8, 2), (8, 3))),
                   rng.choice(CLASSES), rng.uniform(0, 9000), rng.uniform(60, 20_000), rng.random() < 0.05)
        for j in range(rng.randint(0, 60))
    ]  # fmt: skip
    return grid, quotas, pending, busy


@pytest.mark.parametrize("seed", range(200))
def test_it_keeps_every_invariant(seed: int) -> None:
    rng = random.Random(seed)
    grid, quotas, pending, busy = _snapshot(rng)
    config = PolicyConfig(min_victim_runtime_s=rng.choice((0.0, 900.0)), backfill=rng.random() > 0.2)
    cluster = Cluster(grid)
    result = run_cycle(now=10_000.0, cluster=cluster, quotas=quotas, pending=pending, running=busy, usage={}, config=config)
    assert violations(cluster, quotas, pending, busy, result) == []
    assert {a.job_id for a in result.admitted} | set(result.waiting) == {j.id for j in pending}
    by_id = {j.id: j for j in busy}
    assert all(by_id[p.job_id].priority != "critical" for p in result.preempted)
    assert all(10_000.0 - by_id[p.job_id].start_time >= config.min_victim_runtime_s for p in result.preempted)


def test_the_checker_catches_a_broken_decision() -> None:
    """The invariant check itself must be able to fail."""
    from jobs.policy import Admission, CycleResult

    cluster = Cluster([NodeState("n0", "east", "a100", 8, 2)])
    quotas = [Quota("vision", "a100", 0, 4)]
    pending = [PendingJob("p", "vision", "a100", 8, 1, "standard", 0.0, 60.0)]
    broken = CycleResult(admitted=[Admission("p", "east", {"n0": 8}), Admission("p", "east", {"n0": 8})])
    problems = violations(cluster, quotas, pending, [], broken)
    assert any("admitted 2 times" in p for p in problems)
    assert any("GPUs given out" in p for p in problems)
    assert any("over limit" in p for p in problems)
