"""Reclaim: a team's within-guarantee demand preempts borrowers, losing the least work."""

from __future__ import annotations

from jobs.policy import PolicyConfig
from tests.policy.builders import NOW, cycle, job, nodes, quota, running

QUOTAS = [quota("vision", 8, 16), quota("render", 8, 16)]


def test_it_preempts_the_borrower_that_loses_least_work() -> None:
    # render borrows all 16 GPUs; its checkpoints differ.
    busy = [
        running("fresh-ckpt", "render", {"p1-n00": 8}, start=NOW - 7200, last_checkpoint=NOW - 60),
        running("stale-ckpt", "render", {"p1-n01": 8}, start=NOW - 7200, last_checkpoint=NOW - 1700),
    ]
    result = cycle(nodes(2, free=0), QUOTAS, [job("v", team="vision", gpus=8)], busy)
    assert [p.job_id for p in result.preempted] == ["fresh-ckpt"]
    assert result.preempted[0].lost_gpu_s == 60 * 8
    assert result.admitted[0].job_id == "v"
    assert result.admitted[0].preempts == ("fresh-ckpt",)
    assert result.admitted[0].placement == {"p1-n00": 8}


def test_it_derives_lost_work_from_the_checkpoint_interval() -> None:
    busy = [
        running("a", "render", {"p1-n00": 8}, start=NOW - 3700, checkpoint_every=1800),  # 100 s since a checkpoint
        running("b", "render", {"p1-n01": 8}, start=NOW - 3500, checkpoint_every=1800),  # 1,700 s
    ]
    result = cycle(nodes(2, free=0), QUOTAS, [job("v", team="vision", gpus=8)], busy)
    assert [p.job_id for p in result.preempted] == ["a"]


def test_it_preempts_the_preemptible_class_first() -> None:
    busy = [
        running("cheap-standard", "render", {"p1-n00": 8}, priority="standard", last_checkpoint=NOW - 10),
        running("costly-preemptible", "render", {"p1-n01": 8}, priority="preemptible", last_checkpoint=NOW - 1000),
    ]
    result = cycle(nodes(2, free=0), QUOTAS, [job("v", team="vision", gpus=8)], busy)
    assert [p.job_id for p in result.preempted] == ["costly-preemptible"]


def test_it_never_preempts_a_critical_job() -> None:
    busy = [running(f"c{i}", "render", {f"p1-n0{i}": 8}, priority="critical") for i in range(2)]
    result = cycle(nodes(2, free=0), [quota("vision", 8, 16), quota("render", 8, 16)], [job("v", team="vision", gpus=8)], busy)
    assert result.preempted == []
    assert result.waiting["v"].reason == "capacity"


def test_it_only_preempts_teams_that_borrow() -> None:
    busy = [running("v-own", "vision", {"p1-n00": 8}), running("r-own", "render", {"p1-n01": 8})]
    result = cycle(nodes(2, free=0), QUOTAS, [job("v2", team="vision", gpus=1)], busy)
    assert result.preempted == []


def test_it_does_not_reclaim_for_demand_beyond_the_guarantee() -> None:
    busy = [running("r1", "render", {"p1-n00": 8}), running("r2", "render", {"p1-n01": 8})]
    result = cycle(nodes(2, free=0), QUOTAS, [job("v", team="vision", gpus=8, nodes=2)], busy)
    assert result.preempted == []


def test_a_job_that_just_started_is_not_a_victim() -> None:
    busy = [running("r1", "render", {"p1-n00": 8}, start=NOW - 60), running("r2", "render", {"p1-n01": 8}, start=NOW - 60)]
    result = cycle(
        nodes(2, free=0), QUOTAS, [job("v", team="vision", gpus=8)], busy, config=PolicyConfig(min_victim_runtime_s=900)
    )
    assert result.preempted == []


def test_a_reclaimed_job_is_not_reclaimed_straight_back() -> None:
    busy = [running("r1", "render", {"p1-n00": 8}), running("r2", "render", {"p1-n01": 8})]
    first = cycle(nodes(2, free=0), QUOTAS, [job("v", team="vision", gpus=8)], busy)
    assert [p.job_id for p in first.preempted] == ["r1"]
    # Next cycle: the preempted job asks again; vision now holds exactly its guarantee, render too.
    after = [running("v", "vision", dict(first.admitted[0].placement), start=NOW), busy[1]]
    requeued = job("r1", team="render", gpus=8)
    second = cycle(nodes(2, free=0), QUOTAS, [requeued], after, now=NOW + 5)
    assert second.preempted == []
    assert second.waiting["r1"].reason == "capacity"


def test_it_preempts_several_small_borrowers_for_one_job() -> None:
    busy = [running(f"r{i}", "render", {"p1-n00": 2}, last_checkpoint=NOW - 10 * (i + 1)) for i in range(4)]
    busy += [running("r-big", "render", {"p1-n01": 8}, last_checkpoint=NOW - 1000)]
    quotas = [quota("vision", 8, 16), quota("render", 4, 16)]
    result = cycle(nodes(2, free=0), quotas, [job("v", team="vision", gpus=8)], busy)
    assert sorted(p.job_id for p in result.preempted) == ["r0", "r1", "r2", "r3"]
