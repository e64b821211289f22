"""Every waiting job says why (one of the reason codes), where it stands, and when it may start."""

from __future__ import annotations

from jobs.policy import NodeState, Reason
from tests.policy.builders import NOW, cycle, job, nodes, quota, running

QUOTAS = [quota("vision", 2, 8), quota("render", 0, 16)]


def test_each_reason_code_is_used() -> None:
    grid = [NodeState("a", "p1", "a100", 8, 4), NodeState("b", "p1", "a100", 8, 2)]
    busy = [running("ra", "render", {"a": 4}, end=NOW + 1000), running("rb", "render", {"b": 6}, end=NOW + 2000)]
    pending = [
        job("held", held=True),
        job("over-limit", gpus=8, nodes=2),  # vision may hold 8 at most, this needs 16
        job("no-such-shape", team="render", gpus=16),
        job("frag", team="render", gpus=6, submit=1),  # gets the reservation on node a
        job("queue", team="render", gpus=4, submit=2, walltime=99_999),
        job("scavenger", team="render", gpus=4, submit=3, priority="preemptible", walltime=99_999),
    ]
    result = cycle(grid, QUOTAS, pending, busy)
    reasons = {j: e.reason for j, e in result.waiting.items()}
    assert reasons == {
        "held": Reason.BUDGET,
        "over-limit": Reason.QUOTA,
        "no-such-shape": Reason.NO_NODES,
        "frag": Reason.FRAGMENTATION,
        "queue": Reason.QUEUE,
        "scavenger": Reason.PRIORITY,
    }
    assert all(e.detail for e in result.waiting.values())


def test_capacity_and_gang_reasons() -> None:
    grid = [*nodes(1, free=8), NodeState("p1-x", "p1", "a100", 8, 6), NodeState("p1-y", "p1", "a100", 8, 6)]
    pending = [job("gang", team="render", gpus=8, nodes=2), job("cap", team="render", gpus=8, nodes=2, submit=1)]
    first = cycle(grid, QUOTAS, pending[:1])
    assert first.waiting["gang"].reason == Reason.GANG
    full = cycle(nodes(2, free=0), QUOTAS, pending[1:])
    assert full.waiting["cap"].reason == Reason.CAPACITY


def test_positions_count_from_one_in_team_and_pool_lines() -> None:
    pending = [job(f"v{i}", team="vision", submit=i) for i in range(3)] + [job("r0", team="render", submit=5)]
    result = cycle(nodes(1, free=0), [quota("vision", 0, 8), quota("render", 0, 8)], pending, usage={"vision": 10.0})
    positions = {j: (e.team_position, e.pool_position) for j, e in result.waiting.items()}
    assert positions == {"r0": (1, 1), "v0": (1, 2), "v1": (2, 3), "v2": (3, 4)}


def test_held_jobs_stand_outside_the_line() -> None:
    result = cycle(nodes(1, free=0), QUOTAS, [job("h", held=True), job("w", submit=1)])
    assert (result.waiting["h"].team_position, result.waiting["h"].estimated_start) == (None, None)
    assert result.waiting["w"].team_position == 1


def test_the_estimate_reads_running_jobs_expected_ends() -> None:
    grid = [NodeState("a", "p1", "a100", 8, 0), NodeState("b", "p1", "a100", 8, 0)]
    busy = [
        running("ra", "render", {"a": 8}, end=NOW + 500, priority="critical"),
        running("rb", "render", {"b": 8}, end=NOW + 900, priority="critical"),
    ]
    pending = [job("one", team="render", gpus=2), job("two-nodes", team="render", gpus=8, nodes=2, submit=1)]
    result = cycle(grid, QUOTAS, pending, busy)
    assert result.waiting["one"].estimated_start == NOW + 500
    assert result.waiting["two-nodes"].estimated_start == NOW + 900


def test_a_quota_wait_is_estimated_from_the_teams_own_jobs() -> None:
    busy = [running("v1", "vision", {"p1-n00": 8}, end=NOW + 3000)]
    result = cycle(nodes(2, free=8)[1:], QUOTAS, [job("v2", gpus=1)], busy)
    assert result.waiting["v2"].reason == Reason.QUOTA
    assert result.waiting["v2"].estimated_start == NOW + 3000
