"""Backfill: the top blocked job of a pool holds nodes; later jobs use them only if they end first."""

from __future__ import annotations

from jobs.policy import NodeState, RunningJob
from tests.policy.builders import NOW, cycle, job, quota, running

QUOTAS = [quota("vision", 0, 64), quota("render", 0, 64)]


def _half_busy() -> tuple[list[NodeState], list[RunningJob]]:
    grid = [NodeState("a", "p1", "a100", 8, 4), NodeState("b", "p1", "a100", 8, 4)]
    busy = [running("ra", "render", {"a": 4}, end=NOW + 1000), running("rb", "render", {"b": 4}, end=NOW + 5000)]
    return grid, busy


def test_the_blocked_large_job_gets_a_reservation_with_its_start() -> None:
    grid, busy = _half_busy()
    result = cycle(grid, QUOTAS, [job("big", gpus=8, walltime=7200)], busy)
    assert [(r.job_id, r.nodes, r.start) for r in result.reservations] == [("big", ("a",), NOW + 1000)]
    assert result.waiting["big"].estimated_start == NOW + 1000


def test_a_short_job_backfills_onto_the_reserved_node() -> None:
    grid, busy = _half_busy()
    pending = [job("big", gpus=8, submit=0), job("short", team="render", gpus=4, submit=10, walltime=600)]
    result = cycle(grid, QUOTAS, pending, busy)
    assert [a.job_id for a in result.admitted] == ["short"]


def test_a_long_job_may_not_delay_the_reserved_job() -> None:
    grid, busy = _half_busy()
    pending = [job("big", gpus=8, submit=0), job("long", team="render", gpus=4, submit=10, walltime=90_000)]
    result = cycle(grid, QUOTAS, pending, busy)
    # The long job may use node b (not reserved) but never node a.
    assert [(a.job_id, a.placement) for a in result.admitted] == [("long", {"b": 4})]


def test_a_long_job_that_only_fits_on_reserved_nodes_waits_its_turn() -> None:
    grid = [NodeState("a", "p1", "a100", 8, 4)]
    busy = [running("ra", "render", {"a": 4}, end=NOW + 1000)]
    pending = [job("big", gpus=8, submit=0), job("long", team="render", gpus=4, submit=10, walltime=90_000)]
    result = cycle(grid, QUOTAS, pending, busy)
    assert result.admitted == []
    assert result.waiting["long"].reason == "queue"
    assert "held for job big" in result.waiting["long"].detail


def test_a_lower_class_job_blocked_by_a_reservation_waits_on_priority() -> None:
    grid = [NodeState("a", "p1", "a100", 8, 4)]
    busy = [running("ra", "render", {"a": 4}, end=NOW + 1000)]
    pending = [job("big", gpus=8), job("scavenger", team="render", gpus=4, priority="preemptible", walltime=90_000)]
    result = cycle(grid, QUOTAS, pending, busy)
    assert result.waiting["scavenger"].reason == "priority"


def test_the_large_job_starts_despite_a_stream_of_small_ones() -> None:
    """Replay a few cycles by hand: small long jobs keep coming, the 16-GPU job still starts when its nodes drain."""
    free = {"a": 4, "b": 4}
    busy = [running("ra", "render", {"a": 4}, end=NOW + 1000), running("rb", "render", {"b": 4}, end=NOW + 2000)]
    big = job("big", gpus=8, nodes=2, submit=0)
    started_big_at = None
    for step in range(6):
        now = NOW + step * 1000
        busy = [r for r in busy if r.expected_end > now]
        free = {n: 8 - sum(r.placement.get(n, 0) for r in busy) for n in free}
        grid = [NodeState(n, "p1", "a100", 8, f) for n, f in free.items()]
        smalls = [job(f"s{step}-{i}", team="render", gpus=2, submit=100 + step * 1000 + i, walltime=50_000) for i in range(4)]
        pending = ([big] if started_big_at is None else []) + smalls
        result = cycle(grid, QUOTAS, pending, busy, now=now)
        for admission in result.admitted:
            source = next(p for p in pending if p.id == admission.job_id)
            busy.append(running(str(source.id), source.team, dict(admission.placement), start=now, end=now + source.walltime_s))
            if source.id == "big":
                started_big_at = now
    assert started_big_at == NOW + 2000
