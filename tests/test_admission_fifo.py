"""The first admission rule: FIFO within each team's GPU limit, gangs all-or-nothing on real nodes."""

from __future__ import annotations

from jobs.admission import FreeNode, WaitingJob, admit_fifo, place


def nodes(*free: int, pool: str = "a", model: str = "a100", cloud: bool = False) -> list[FreeNode]:
    return [FreeNode(f"{pool}-{i}", pool, cloud, model, f, 8) for i, f in enumerate(free)]


def job(id: int, team: int = 1, gpus: int = 1, nodes: int = 1, model: str = "a100") -> WaitingJob:
    return WaitingJob(id, team, model, gpus, nodes)


def test_it_admits_oldest_first_until_the_team_limit():
    result = admit_fifo([job(1, gpus=4), job(2, gpus=4), job(3, gpus=4)], nodes(8, 8), {}, {(1, "a100"): 8}, 99)
    assert [a.job_id for a in result.admitted] == [1, 2]
    assert result.waiting[3][0] == "quota"


def test_a_blocked_head_blocks_its_own_team_but_not_others():
    waiting = [job(1, team=1, gpus=8), job(2, team=1, gpus=1), job(3, team=2, gpus=1)]
    result = admit_fifo(waiting, nodes(4), {}, {}, 99)
    assert [a.job_id for a in result.admitted] == [3]
    assert result.waiting[1][0] == "capacity"
    assert result.waiting[2] == ("queue", "behind job #1 of the same team")


def test_usage_already_held_counts_against_the_limit():
    result = admit_fifo([job(1, gpus=2)], nodes(8), {(1, "a100"): 7}, {(1, "a100"): 8}, 99)
    assert not result.admitted and result.waiting[1][0] == "quota"


def test_a_gang_is_placed_whole_or_not_at_all():
    result = admit_fifo([job(1, gpus=8, nodes=2)], nodes(8, 4, 4), {}, {}, 99)
    assert not result.admitted
    assert result.waiting[1][0] == "fragmentation"


def test_a_gang_never_spans_pools():
    spread = nodes(8, pool="a") + nodes(8, pool="b")
    assert place(job(1, gpus=8, nodes=2), spread) is None
    assert place(job(1, gpus=8, nodes=2), nodes(8, 8, pool="a")) == ("a", {"a-0": 8, "a-1": 8})


def test_best_fit_keeps_whole_nodes_free_for_large_jobs():
    pool = nodes(8, 3, 5)
    assert place(job(1, gpus=2), pool) == ("a", {"a-1": 2})


def test_on_premises_pools_fill_before_cloud_pools():
    both = nodes(8, pool="zz-onprem") + nodes(8, pool="aa-cloud", cloud=True)
    assert place(job(1, gpus=1), both)[0] == "zz-onprem"


def test_a_model_without_healthy_nodes_says_so():
    result = admit_fifo([job(1, model="h100")], nodes(8), {}, {}, 99)
    assert result.waiting[1][0] == "no_nodes"


def test_admitted_jobs_use_up_the_free_gpus_they_were_given():
    result = admit_fifo([job(i, team=i, gpus=3) for i in range(1, 5)], nodes(8), {}, {}, 99)
    assert [a.job_id for a in result.admitted] == [1, 2]
    assert result.waiting[3][0] == "capacity"
