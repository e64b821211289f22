"""Order of admission: priority class, then weighted fair share, then age."""

from __future__ import annotations

from tests.policy.builders import NOW, admitted_ids, cycle, job, nodes, quota, running

QUOTAS = [quota("vision", 0, 64), quota("render", 0, 64), quota("nlp", 0, 64)]


def test_it_admits_higher_class_before_older_lower_class() -> None:
    pending = [job("old-preemptible", priority="preemptible", submit=0), job("new-standard", priority="standard", submit=500)]
    result = cycle(nodes(1, gpus=1), QUOTAS, pending)
    assert admitted_ids(result) == ["new-standard"]
    assert result.waiting["old-preemptible"].reason == "capacity"


def test_it_prefers_the_team_with_less_decayed_usage() -> None:
    pending = [job("heavy", team="vision", submit=0), job("light", team="render", submit=900)]
    result = cycle(nodes(1, gpus=1), QUOTAS, pending, usage={"vision": 5e6, "render": 1e3})
    assert admitted_ids(result) == ["light"]


def test_it_counts_gpus_held_now_in_the_fair_share() -> None:
    busy = [running("r1", "vision", {"p1-n00": 4})]
    pending = [job("v", team="vision", submit=0), job("r", team="render", submit=900)]
    result = cycle(nodes(1, gpus=5, free=1), QUOTAS, pending, busy)
    assert admitted_ids(result) == ["r"]


def test_it_divides_usage_by_weight() -> None:
    quotas = [quota("vision", 0, 64, weight=10), quota("render", 0, 64, weight=1)]
    pending = [job("v", team="vision", submit=500), job("r", team="render", submit=0)]
    result = cycle(nodes(1, gpus=1), quotas, pending, usage={"vision": 5000, "render": 1000})
    assert admitted_ids(result) == ["v"]


def test_it_breaks_ties_by_age() -> None:
    pending = [job("younger", submit=50), job("older", submit=10)]
    result = cycle(nodes(1, gpus=1), QUOTAS, pending)
    assert admitted_ids(result) == ["older"]


def test_it_alternates_between_equal_teams_as_they_are_served() -> None:
    pending = [job(f"v{i}", team="vision", submit=i) for i in range(4)] + [
        job(f"r{i}", team="render", submit=10 + i) for i in range(4)
    ]
    result = cycle(nodes(1, gpus=4), QUOTAS, pending)
    assert sorted(admitted_ids(result)) == ["r0", "r1", "v0", "v1"]


def test_a_starving_job_goes_by_age_ahead_of_fair_share() -> None:
    pending = [job("heavy-old", team="vision", submit=0), job("light-new", team="render", submit=80_000)]
    result = cycle(nodes(1, gpus=1), QUOTAS, pending, usage={"vision": 1e9}, now=NOW + 86_400)
    assert admitted_ids(result) == ["heavy-old"]
