"""Gangs start all-or-nothing, on real nodes: one node up to its size, whole nodes in one pool beyond."""

from __future__ import annotations

from jobs.policy import NodeState
from tests.policy.builders import cycle, job, nodes, quota

QUOTAS = [quota("vision", 0, 256)]


def test_it_places_a_small_job_on_the_fullest_node_that_fits() -> None:
    grid = [NodeState("a", "p1", "a100", 8, 8), NodeState("b", "p1", "a100", 8, 3), NodeState("c", "p1", "a100", 8, 2)]
    result = cycle(grid, QUOTAS, [job("j", gpus=3)])
    assert result.admitted[0].placement == {"b": 3}


def test_it_never_splits_a_single_node_job() -> None:
    grid = [NodeState("a", "p1", "a100", 8, 4), NodeState("b", "p1", "a100", 8, 4)]
    result = cycle(grid, QUOTAS, [job("j", gpus=8)])
    assert result.admitted == []
    assert result.waiting["j"].reason == "fragmentation"


def test_it_puts_a_multi_node_job_on_whole_free_nodes() -> None:
    grid = [*nodes(2, free=8), NodeState("p1-part", "p1", "a100", 8, 7)]
    result = cycle(grid, QUOTAS, [job("j", gpus=8, nodes=2)])
    assert result.admitted[0].placement == {"p1-n00": 8, "p1-n01": 8}


def test_it_admits_a_gang_all_or_nothing() -> None:
    grid = [*nodes(2, free=8), NodeState("p1-part", "p1", "a100", 8, 7), NodeState("p1-part2", "p1", "a100", 8, 7)]
    result = cycle(grid, QUOTAS, [job("j", gpus=8, nodes=3)])
    assert result.admitted == []
    assert result.waiting["j"].reason == "gang"


def test_it_keeps_a_gang_inside_one_pool() -> None:
    grid = nodes(1, pool="east") + nodes(1, pool="east", free=0, prefix="east-busy") + nodes(1, pool="west")
    grid += nodes(1, pool="west", free=0, prefix="west-busy")
    result = cycle(grid, QUOTAS, [job("j", gpus=8, nodes=2)])
    assert result.admitted == []
    assert result.waiting["j"].reason == "gang"


def test_a_gang_larger_than_any_pool_has_no_nodes() -> None:
    result = cycle(nodes(1, pool="east") + nodes(1, pool="west"), QUOTAS, [job("j", gpus=8, nodes=2)])
    assert result.waiting["j"].reason == "no_nodes"


def test_it_prefers_on_premises_pools_to_cloud_ones() -> None:
    grid = [NodeState("cloud-1", "burst", "a100", 8, 8, is_cloud=True), NodeState("onprem-1", "zz-onprem", "a100", 8, 8)]
    result = cycle(grid, QUOTAS, [job("j", gpus=2)])
    assert result.admitted[0].pool == "zz-onprem"


def test_it_skips_unhealthy_nodes() -> None:
    grid = [NodeState("sick", "p1", "a100", 8, 8, healthy=False)]
    result = cycle(grid, QUOTAS, [job("j", gpus=1)])
    assert result.admitted == []
    assert result.waiting["j"].reason == "no_nodes"


def test_it_matches_the_gpu_model() -> None:
    grid = nodes(1, model="h100")
    result = cycle(
        grid, [quota("vision", 0, 8, model="a100"), quota("vision", 0, 8, model="h100")], [job("j", gpus=1, model="a100")]
    )
    assert result.waiting["j"].reason == "no_nodes"


def test_it_does_not_admit_a_job_twice_in_one_cycle() -> None:
    result = cycle(nodes(4), QUOTAS, [job("j", gpus=2), job("k", gpus=2)])
    assert sorted(a.job_id for a in result.admitted) == ["j", "k"]
