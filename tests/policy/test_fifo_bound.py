"""The FIFO shadow schedule and the bound it gives the fair policy (PolicyConfig.fifo_bound)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from jobs.policy import Cluster, JobId, NodeState, PendingJob, PolicyConfig, Quota, run_cycle
from jobs.policy.replay import ReplaySpec, TraceJob, _Simulation, replay
from jobs.policy.shadow import FifoShadow
from tests.policy.builders import NOW, SUBMITTED, cycle, job, quota, running

QUOTAS = [quota("heavy", 0, 64), quota("light", 0, 64)]
HEAVY = {"heavy": 1e9, "light": 0.0}  # decayed usage: "heavy" is far behind in fair share
BOUND = PolicyConfig(fifo_bound=True)


def _grid(free: int = 8) -> list[NodeState]:
    return [NodeState("a", "p1", "a100", 8, free)]


# -- the shadow ---------------------------------------------------------------------------


def test_the_shadow_starts_each_job_when_strict_fifo_would() -> None:
    shadow = FifoShadow(_grid(), QUOTAS)
    # 8 GPUs: "big" fills the node until t=100; "small" (submitted after it) cannot pass it, nor can
    # "late", which would fit in the 4 GPUs "small" leaves only once "big" has ended.
    assert shadow.arrive(PendingJob("big", "heavy", "a100", 8, 1, "standard", 0.0, 100.0)) == 0.0
    assert shadow.arrive(PendingJob("small", "light", "a100", 4, 1, "standard", 10.0, 50.0)) == 100.0
    assert shadow.arrive(PendingJob("late", "light", "a100", 4, 1, "standard", 20.0, 500.0)) == 100.0
    assert shadow.arrive(PendingJob("next", "light", "a100", 4, 1, "standard", 30.0, 10.0)) == 150.0


def test_the_shadow_keeps_team_limits_as_fifo_does() -> None:
    shadow = FifoShadow([*_grid(), NodeState("b", "p1", "a100", 8, 8)], [quota("heavy", 0, 8)])
    assert shadow.arrive(PendingJob("one", "heavy", "a100", 8, 1, "standard", 0.0, 100.0)) == 0.0
    # The second node is free, but the team is at its limit until its first job ends.
    assert shadow.arrive(PendingJob("two", "heavy", "a100", 8, 1, "standard", 0.0, 100.0)) == 100.0


def test_a_job_no_pool_could_ever_hold_never_starts_and_blocks_nobody() -> None:
    shadow = FifoShadow(_grid(), QUOTAS)
    assert shadow.arrive(PendingJob("huge", "heavy", "a100", 8, 2, "standard", 0.0, 100.0)) == math.inf
    assert shadow.arrive(PendingJob("fits", "light", "a100", 8, 1, "standard", 1.0, 100.0)) == 1.0


def test_the_shadow_matches_the_fifo_replay_job_for_job() -> None:
    trace = [
        TraceJob(f"j{i}", float(i * 37 % 500), float(200 + i * 53 % 900), [1, 2, 4, 8, 16][i % 5], f"t{i % 3}") for i in range(60)
    ]
    trace.sort(key=lambda j: j.submit_time)
    fifo = _Simulation(trace, ReplaySpec(3, 8, "fifo"))
    fifo.run()
    shadow = FifoShadow([fifo._node_state(n, f) for n, f in fifo.free.items()], fifo.quotas)
    for t in fifo.arrivals:
        per_node, count = fifo.shapes[t.id]
        start = shadow.arrive(PendingJob(t.id, t.team, fifo.model[t.id], per_node, count, t.priority, t.submit_time, t.duration))
        assert start - t.submit_time == pytest.approx(fifo.wait[t.id])
    assert max(fifo.wait.values()) > 0  # the trace does queue


# -- the bound in one cycle ---------------------------------------------------------------


def _heavy_due_and_light_new(fifo_start: float) -> list[PendingJob]:
    old = replace(job("old", team="heavy", gpus=8, submit=0), fifo_start=fifo_start)
    return [old, job("new", team="light", gpus=8, submit=3540)]


def test_without_the_bound_fair_share_passes_a_job_fifo_would_have_started() -> None:
    result = cycle(_grid(), QUOTAS, _heavy_due_and_light_new(SUBMITTED + 60), usage=HEAVY)
    assert [a.job_id for a in result.admitted] == ["new"]


def test_a_job_past_its_fifo_start_goes_ahead_of_fair_share() -> None:
    result = cycle(_grid(), QUOTAS, _heavy_due_and_light_new(SUBMITTED + 60), usage=HEAVY, config=BOUND)
    assert [a.job_id for a in result.admitted] == ["old"]


def test_a_job_before_its_fifo_start_still_goes_by_fair_share() -> None:
    result = cycle(_grid(), QUOTAS, _heavy_due_and_light_new(NOW + 600), usage=HEAVY, config=BOUND)
    assert [a.job_id for a in result.admitted] == ["new"]
    lead = PolicyConfig(fifo_bound=True, fifo_bound_lead_s=900.0)  # due 15 minutes ahead of its FIFO start
    result = cycle(_grid(), QUOTAS, _heavy_due_and_light_new(NOW + 600), usage=HEAVY, config=lead)
    assert [a.job_id for a in result.admitted] == ["old"]


def test_a_due_job_holds_its_own_reservation_and_keeps_it() -> None:
    grid = [NodeState("a", "p1", "a100", 8, 0), NodeState("b", "p1", "a100", 8, 0)]
    busy = [running("ra", "light", {"a": 8}, end=NOW + 1000), running("rb", "light", {"b": 8}, end=NOW + 5000)]
    first = job("first", team="light", gpus=8, submit=100)
    due = replace(job("due", team="heavy", gpus=8, submit=0), fifo_start=SUBMITTED + 60)
    # Without the bound the pool's one reservation goes to the first blocked job in fair order.
    plain = cycle(grid, QUOTAS, [first, replace(due, fifo_start=None)], busy, usage=HEAVY, config=BOUND)
    assert [r.job_id for r in plain.reservations] == ["first"]
    result = cycle(grid, QUOTAS, [first, due], busy, usage=HEAVY, config=BOUND)
    assert [(r.job_id, r.nodes) for r in result.reservations] == [("due", ("a",))]
    # Next cycle the due job keeps node "a" though other nodes free sooner in between.
    again = run_cycle(
        now=NOW + 10, cluster=Cluster(grid), quotas=QUOTAS, pending=[first, due], running=busy, usage=HEAVY,
        config=BOUND, previous=result.reservations,
    )  # fmt: skip
    assert ("due", ("a",)) in [(r.job_id, r.nodes) for r in again.reservations]


# -- the bound over a whole replay --------------------------------------------------------


def _crowding_trace() -> list[TraceJob]:
    """A heavy team's two-node job behind a steady stream of a light team's half-node jobs.

    Under FIFO the two-node job starts at t=6000, once the jobs submitted before it have ended;
    under fair share alone the light team (far less usage) takes each node as it frees, and the
    two-node job waits for a gap in the stream.
    """
    rows = [TraceJob("h0", 0.0, 3000.0, 8, "heavy"), TraceJob("h1", 0.0, 6000.0, 8, "heavy")]
    rows.append(TraceJob("big", 100.0, 1000.0, 16, "heavy"))
    rows += [TraceJob(f"l{i}", 50.0 + 300.0 * i, 3000.0, 4, "light") for i in range(40)]
    return sorted(rows, key=lambda j: j.submit_time)


# No guarantees: reclaim would preempt the heavy team's first jobs, a delay FIFO never has.
NO_GUARANTEES = (Quota("heavy", "gpu", 0, 16), Quota("light", "gpu", 0, 16))


def _spec(policy: str, config: PolicyConfig | None = None) -> ReplaySpec:
    return ReplaySpec(2, 8, policy, quotas=NO_GUARANTEES, config=config or PolicyConfig(explain=False))


def _waits(spec: ReplaySpec) -> dict[str, float]:
    simulation = _Simulation(_crowding_trace(), spec)
    simulation.run()
    assert len(simulation.done) == len(simulation.trace)
    return dict(simulation.wait)


def test_over_a_replay_no_job_waits_longer_than_under_fifo() -> None:
    fifo = _waits(_spec("fifo"))
    plain = _waits(_spec("fair"))
    bound = _waits(_spec("fair", PolicyConfig(explain=False, fifo_bound=True)))
    assert plain["big"] > fifo["big"]  # the case the bound is for
    assert bound["big"] <= fifo["big"]
    assert max(bound.values()) <= max(fifo.values())


def test_the_replay_reports_every_job_done_with_the_bound() -> None:
    report = replay(_crowding_trace(), _spec("fair", PolicyConfig(explain=False, fifo_bound=True)))
    assert report["completed"] == report["jobs"] and report["limit_violations"] == 0


def _reclaim_case(fifo_start: float | None, config: PolicyConfig) -> list[JobId]:
    grid = [NodeState("a", "p1", "a100", 8, 0)]
    quotas = [quota("heavy", 0, 64), quota("light", 8, 64)]  # "heavy" borrows the node "light" is guaranteed
    busy = [replace(running("r", "heavy", {"a": 8}), fifo_start=fifo_start)]
    result = cycle(grid, quotas, [job("claim", team="light", gpus=8)], busy, usage=HEAVY, config=config)
    return [p.job_id for p in result.preempted]


def test_a_running_job_past_its_fifo_start_is_no_reclaim_victim_with_shields() -> None:
    shields = PolicyConfig(fifo_bound=True, fifo_bound_shields=True)
    assert _reclaim_case(NOW - 100, BOUND) == ["r"]  # shields are off by default
    assert _reclaim_case(NOW - 100, shields) == []
    assert _reclaim_case(NOW + 3600, shields) == ["r"]  # FIFO would not have started it yet


def test_only_the_first_due_jobs_get_reservations_of_their_own_with_a_cap() -> None:
    grid = [NodeState(n, "p1", "a100", 8, 0) for n in "abc"]
    busy = [running(f"r{n}", "light", {n: 8}, end=NOW + 1000 * (i + 1)) for i, n in enumerate("abc")]
    due = [replace(job(f"d{i}", team="heavy", gpus=8, submit=i), fifo_start=SUBMITTED + 60) for i in range(3)]
    every = cycle(grid, QUOTAS, due, busy, usage=HEAVY, config=BOUND)
    assert sorted(r.job_id for r in every.reservations) == ["d0", "d1", "d2"]
    capped = cycle(grid, QUOTAS, due, busy, usage=HEAVY, config=replace(BOUND, fifo_bound_reservations=1))
    assert [r.job_id for r in capped.reservations] == ["d0"]
