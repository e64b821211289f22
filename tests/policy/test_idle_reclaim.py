"""Telemetry into the scheduler: jobs marked reclaimable for idle GPUs are the first victims, and a
site may count a team's idle allocation against its fair-share standing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from jobs.policy import with_idle_penalty
from tests.policy.builders import NOW, admitted_ids, cycle, job, nodes, quota, running

QUOTAS = [quota("vision", 8, 16), quota("render", 8, 16)]


def test_an_idle_job_goes_before_a_busy_borrower_that_loses_less_work() -> None:
    busy = [
        running("busy", "render", {"p1-n00": 8}, last_checkpoint=NOW - 10),
        replace(running("idle", "render", {"p1-n01": 8}, last_checkpoint=NOW - 1700), idle=True),
    ]
    result = cycle(nodes(2, free=0), QUOTAS, [job("v", team="vision", gpus=8)], busy)
    assert [p.job_id for p in result.preempted] == ["idle"]
    assert "idle" in result.preempted[0].reason and "vision" in result.preempted[0].reason
    assert result.admitted[0].preempts == ("idle",)


def test_an_idle_job_is_a_victim_even_while_its_team_is_within_its_guarantee() -> None:
    quotas = [quota("vision", 8, 16), quota("render", 16, 16)]  # render holds exactly its guarantee
    busy = [running("r0", "render", {"p1-n00": 8}), running("r1", "render", {"p1-n01": 8})]
    assert cycle(nodes(2, free=0), quotas, [job("v", team="vision", gpus=8)], busy).preempted == []
    busy[1] = replace(busy[1], idle=True)
    result = cycle(nodes(2, free=0), quotas, [job("v", team="vision", gpus=8)], busy)
    assert [p.job_id for p in result.preempted] == ["r1"] and admitted_ids(result) == ["v"]


def test_a_critical_idle_job_is_still_never_preempted() -> None:
    busy = [replace(running(f"c{i}", "render", {f"p1-n0{i}": 8}, priority="critical"), idle=True) for i in range(2)]
    result = cycle(nodes(2, free=0), QUOTAS, [job("v", team="vision", gpus=8)], busy)
    assert result.preempted == []


def test_idle_jobs_are_only_taken_for_demand_within_a_guarantee() -> None:
    busy = [replace(running(f"r{i}", "render", {f"p1-n0{i}": 8}), idle=True) for i in range(2)]
    result = cycle(nodes(2, free=0), [quota("vision", 0, 16), quota("render", 8, 16)], [job("v", team="vision", gpus=8)], busy)
    assert result.preempted == []


def test_a_gang_takes_whole_nodes_of_idle_jobs_first() -> None:
    busy = [
        running("b0", "render", {"p1-n00": 8}, last_checkpoint=NOW - 5),
        running("b1", "render", {"p1-n01": 8}, last_checkpoint=NOW - 5),
        replace(running("i2", "render", {"p1-n02": 8}, last_checkpoint=NOW - 1500), idle=True),
        replace(running("i3", "render", {"p1-n03": 8}, last_checkpoint=NOW - 1500), idle=True),
    ]
    quotas = [quota("vision", 16, 32), quota("render", 8, 32)]
    result = cycle(nodes(4, free=0), quotas, [job("v", team="vision", gpus=8, nodes=2)], busy)
    assert sorted(p.job_id for p in result.preempted) == ["i2", "i3"]


def test_the_idle_penalty_scales_usage_by_the_idle_share() -> None:
    usage = {"vision": 1000.0, "render": 1000.0, "climate": 0.0}
    assert with_idle_penalty(usage, {"vision": 0.5}, 0.0) == usage
    ranked = with_idle_penalty(usage, {"vision": 0.5, "render": 2.0, "climate": 1.0}, 1.0)
    assert ranked == {"vision": 1500.0, "render": 2000.0, "climate": 0.0}  # shares capped at 1; no usage stays none


def test_an_idle_team_ranks_behind_an_equally_used_busy_team() -> None:
    usage = {"vision": 1000.0, "render": 1000.0}
    pending = [job("v", team="vision", gpus=8, submit=0), job("r", team="render", gpus=8, submit=10)]
    quotas = [quota("vision", 0, 16), quota("render", 0, 16)]
    assert admitted_ids(cycle(nodes(1), quotas, pending, usage=usage)) == ["v"]  # equal standing: the older job
    ranked = with_idle_penalty(usage, {"vision": 0.6}, 1.0)
    assert admitted_ids(cycle(nodes(1), quotas, pending, usage=ranked)) == ["r"]


@pytest.mark.parametrize("share", [-0.5, 0.0])
def test_no_idle_share_changes_nothing(share: float) -> None:
    assert with_idle_penalty({"vision": 10.0}, {"vision": share}, 3.0) == {"vision": 10.0}
