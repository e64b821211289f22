"""Borrowing: idle GPUs beyond a team's guarantee, up to its limit, split by weight."""

from __future__ import annotations

from collections import Counter

from jobs.policy import PendingJob
from tests.policy.builders import cycle, job, nodes, quota


def _many(team: str, count: int) -> list[PendingJob]:
    return [job(f"{team}-{i}", team=team, submit=i) for i in range(count)]


def _per_team(result_ids: list[object]) -> Counter[str]:
    return Counter(str(j).split("-")[0] for j in result_ids)


def test_it_lets_a_team_borrow_idle_gpus_up_to_its_limit() -> None:
    result = cycle(nodes(4), [quota("vision", 4, 20), quota("render", 12, 12)], _many("vision", 32))
    assert len(result.admitted) == 20
    assert all(r.reason == "quota" for r in result.waiting.values())
    assert sum(a.borrowing for a in result.admitted) == 16


def test_it_splits_idle_capacity_by_weight() -> None:
    quotas = [quota("vision", 0, 32, weight=3), quota("render", 0, 32, weight=1)]
    result = cycle(nodes(2), quotas, _many("vision", 30) + _many("render", 30))
    assert _per_team([a.job_id for a in result.admitted]) == {"vision": 12, "render": 4}


def test_it_does_not_lend_an_unlendable_guarantee() -> None:
    quotas = [quota("vision", 0, 32), quota("render", 8, 8, lendable=False)]
    result = cycle(nodes(2), quotas, _many("vision", 16))
    assert len(result.admitted) == 8
    assert "unlendable" in result.waiting["vision-8"].detail


def test_a_critical_job_must_fit_in_the_guarantee() -> None:
    quotas = [quota("vision", 2, 16)]
    pending = [job("c1", priority="critical", gpus=2), job("c2", priority="critical", gpus=1, submit=1)]
    result = cycle(nodes(1), quotas, pending)
    assert [a.job_id for a in result.admitted] == ["c1"]
    assert result.waiting["c2"].reason == "quota"
    assert "must fit in the guarantee" in result.waiting["c2"].detail


def test_a_job_within_guarantee_is_not_borrowing() -> None:
    result = cycle(nodes(1), [quota("vision", 4, 8)], [job("a", gpus=4), job("b", gpus=2, submit=1)])
    assert {a.job_id: a.borrowing for a in result.admitted} == {"a": False, "b": True}


def test_a_team_without_a_quota_for_the_model_waits_on_quota() -> None:
    result = cycle(nodes(1), [quota("vision", 4, 8)], [job("x", team="render")])
    assert result.waiting["x"].reason == "quota"
