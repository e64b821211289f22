"""Departments: a team lends first inside its department (its unlendable guarantee is still lent to
department mates), and a reclaim takes GPUs back from borrowers outside the department first."""

from __future__ import annotations

from dataclasses import replace

from jobs.policy import Quota
from tests.policy.builders import NOW, admitted_ids, cycle, job, nodes, quota, running


def in_department(q: Quota, department: str) -> Quota:
    return replace(q, department=department)


def test_an_unlendable_guarantee_is_lent_inside_its_department_only() -> None:
    quotas = [
        in_department(quota("vision", 8, 16, lendable=False), "science"),
        in_department(quota("climate", 0, 16), "science"),
        quota("render", 0, 16),
    ]
    outsider = cycle(nodes(1), quotas, [job("r", team="render", gpus=8)])
    assert admitted_ids(outsider) == [] and "unlendable guarantee" in outsider.waiting["r"].detail
    mate = cycle(nodes(1), quotas, [job("c", team="climate", gpus=8)])
    assert admitted_ids(mate) == ["c"]


def test_without_a_department_an_unlendable_guarantee_is_lent_to_nobody() -> None:
    quotas = [quota("vision", 8, 16, lendable=False), quota("climate", 0, 16)]
    assert admitted_ids(cycle(nodes(1), quotas, [job("c", team="climate", gpus=8)])) == []


def test_a_reclaim_takes_from_borrowers_outside_the_department_first() -> None:
    quotas = [
        in_department(quota("vision", 8, 24), "science"),
        in_department(quota("climate", 0, 24), "science"),
        quota("render", 0, 24),
    ]
    busy = [
        running("mate", "climate", {"p1-n00": 8}, last_checkpoint=NOW - 1700),  # loses more work, but a mate
        running("outsider", "render", {"p1-n01": 8}, last_checkpoint=NOW - 10),
    ]
    result = cycle(nodes(2, free=0), quotas, [job("v", team="vision", gpus=8)], busy)
    assert [p.job_id for p in result.preempted] == ["outsider"]


def test_department_mates_are_taken_when_no_outsider_can_make_room() -> None:
    quotas = [in_department(quota("vision", 8, 24), "science"), in_department(quota("climate", 0, 24), "science")]
    busy = [running("mate", "climate", {"p1-n00": 8}), running("mate2", "climate", {"p1-n01": 8})]
    result = cycle(nodes(2, free=0), quotas, [job("v", team="vision", gpus=8)], busy)
    assert len(result.preempted) == 1 and result.preempted[0].job_id in {"mate", "mate2"}
