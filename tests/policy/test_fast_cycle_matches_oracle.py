"""The fast cycle decides exactly as the straightforward oracle does, explanations included."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest

from bench.admission_cycle import Scenario
from jobs.policy import Cluster, CycleResult, PendingJob, PolicyConfig, Quota, RunningJob, run_cycle
from tests.policy.oracle.cycle import run_cycle as oracle_cycle
from tests.policy.test_invariants_random import TEAMS, _snapshot


def _assert_same_decisions(
    now: float,
    cluster: Cluster,
    quotas: Sequence[Quota],
    pending: Sequence[PendingJob],
    running: Sequence[RunningJob],
    usage: Mapping[str, float],
    config: PolicyConfig,
) -> CycleResult:
    fast = run_cycle(now=now, cluster=cluster, quotas=quotas, pending=pending, running=running, usage=usage, config=config)
    oracle = oracle_cycle(now=now, cluster=cluster, quotas=quotas, pending=pending, running=running, usage=usage, config=config)
    assert fast.admitted == oracle.admitted
    assert fast.preempted == oracle.preempted
    assert fast.reservations == oracle.reservations
    assert dict(fast.waiting) == dict(oracle.waiting)
    return oracle


def _scenario_cycle(scenario: Scenario, config: PolicyConfig) -> CycleResult:
    return _assert_same_decisions(
        scenario.now, scenario.cluster, scenario.quotas, scenario.pending, scenario.running, scenario.usage, config
    )


@pytest.mark.parametrize("seed", [1, 2, 3, 7])
@pytest.mark.parametrize("explain", [True, False])
def test_it_matches_the_oracle_on_busy_snapshots(seed: int, explain: bool) -> None:
    oracle = _scenario_cycle(Scenario(pending=2_000, nodes=300, teams=30, seed=seed), PolicyConfig(explain=explain))
    assert oracle.admitted and oracle.waiting  # the snapshot exercises both sides


def test_it_matches_the_oracle_on_the_benchmark_snapshot() -> None:
    oracle = _scenario_cycle(Scenario(pending=10_000, nodes=2_000, teams=100), PolicyConfig())
    assert oracle.preempted and oracle.reservations


@pytest.mark.parametrize("seed", range(300))
def test_it_matches_the_oracle_on_small_random_grids(seed: int) -> None:
    rng = random.Random(seed)
    grid, quotas, pending, busy = _snapshot(rng)
    config = PolicyConfig(min_victim_runtime_s=rng.choice((0.0, 900.0)), backfill=rng.random() > 0.2, explain=rng.random() > 0.3)
    _assert_same_decisions(10_000.0, Cluster(grid), quotas, pending, busy, {}, config)


@pytest.mark.parametrize("seed", range(200))
def test_it_matches_the_oracle_when_jobs_starve_and_share_their_age(seed: int) -> None:
    """Starving jobs go by age, then team name: ties of age across teams, and jobs right at the age limit."""
    rng = random.Random(10_000 + seed)
    grid, quotas, pending, busy = _snapshot(rng)
    now, age = 10_000.0, rng.choice((1_500.0, 4_000.0, 7_000.0))
    # Submit times on a coarse grid, so that many jobs of different teams share one; some exactly at the limit.
    aged = [replace(job, submit_time=rng.choice((now - age, float(rng.randrange(0, 9_001, 1_000))))) for job in pending]
    rng.shuffle(aged)
    config = PolicyConfig(starvation_age_s=age, backfill=rng.random() > 0.2, explain=rng.random() > 0.3)
    _assert_same_decisions(now, Cluster(grid), quotas, aged, busy, {t: rng.uniform(0, 1e5) for t in TEAMS}, config)


def test_the_starving_tie_break_is_exercised() -> None:
    """The snapshots above do hold starving jobs of different teams with the same age in one class."""
    found = 0
    for seed in range(200):
        rng = random.Random(10_000 + seed)
        _, _, pending, _ = _snapshot(rng)
        now, age = 10_000.0, rng.choice((1_500.0, 4_000.0, 7_000.0))
        aged = [replace(job, submit_time=rng.choice((now - age, float(rng.randrange(0, 9_001, 1_000))))) for job in pending]
        starving = [(j.priority, j.submit_time, j.team) for j in aged if not j.held and now - j.submit_time >= age]
        found += len({(c, t) for c, t, _ in starving}) < len({(c, t, team) for c, t, team in starving})
    assert found > 50
