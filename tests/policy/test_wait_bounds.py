"""The experimental bounds on the worst wait (PolicyConfig fields, all off by default) do what they say."""

from __future__ import annotations

from jobs.policy import Cluster, NodeState, PendingJob, PolicyConfig, Reservation, run_cycle
from tests.policy.builders import NOW, cycle, job, quota, running

QUOTAS = [quota("vision", 0, 64), quota("render", 0, 64), quota("heavy", 0, 64)]
HEAVY = {"heavy": 1e9, "vision": 0.0, "render": 0.0}  # decayed usage: "heavy" is far behind in fair share


def _one_free_node() -> list[NodeState]:
    return [NodeState("a", "p1", "a100", 8, 8)]


def _old_heavy_and_new_light() -> list[PendingJob]:
    # The heavy team's job waited 3 hours; the light team's arrived a minute ago. Both want the node.
    return [job("old", team="heavy", gpus=8, submit=-7200), job("new", team="vision", gpus=8, submit=3540)]


def test_by_default_fair_share_puts_the_light_team_first() -> None:
    result = cycle(_one_free_node(), QUOTAS, _old_heavy_and_new_light(), usage=HEAVY)
    assert [a.job_id for a in result.admitted] == ["new"]


def test_the_oldest_pending_job_goes_first_with_a_fifo_head() -> None:
    config = PolicyConfig(fifo_head=1)
    result = cycle(_one_free_node(), QUOTAS, _old_heavy_and_new_light(), usage=HEAVY, config=config)
    assert [a.job_id for a in result.admitted] == ["old"]


def test_a_fifo_head_waits_for_its_age_limit() -> None:
    config = PolicyConfig(fifo_head=1, fifo_head_after_s=4 * 3600)  # the old job has waited 3 h
    result = cycle(_one_free_node(), QUOTAS, _old_heavy_and_new_light(), usage=HEAVY, config=config)
    assert [a.job_id for a in result.admitted] == ["new"]


def test_a_relative_starvation_age_brings_a_job_far_older_than_the_rest_forward() -> None:
    pending = [*_old_heavy_and_new_light(), job("new2", team="render", gpus=1, submit=3500)]
    # By default the two light jobs go first (the 1-GPU one is older), and the 8-GPU ones no longer fit.
    assert [a.job_id for a in cycle(_one_free_node(), QUOTAS, pending, usage=HEAVY).admitted] == ["new2"]
    # Median age 100 s: 10 x that is far less than the old job's 3 h, so it goes by age, first.
    config = PolicyConfig(starvation_relative=10.0)
    result = cycle(_one_free_node(), QUOTAS, pending, usage=HEAVY, config=config)
    assert [a.job_id for a in result.admitted] == ["old"]


def test_aging_divides_the_fair_share_by_the_wait() -> None:
    usage = {"heavy": 4e6, "vision": 1e6, "render": 0.0}  # 4 x vision's usage
    pending = [job("old", team="heavy", gpus=8, submit=-7200), job("new", team="vision", gpus=8, submit=3540)]
    assert [a.job_id for a in cycle(_one_free_node(), QUOTAS, pending, usage=usage).admitted] == ["new"]
    # Aged by 3 h / 0.5 h: heavy's share counts 1/7, vision's (1 minute) about 1/1.03.
    config = PolicyConfig(aging_s=1800.0)
    assert [a.job_id for a in cycle(_one_free_node(), QUOTAS, pending, usage=usage, config=config).admitted] == ["old"]


def test_a_job_past_the_reservation_age_gets_its_own_reservation() -> None:
    grid = [NodeState("a", "p1", "a100", 8, 0), NodeState("b", "p1", "a100", 8, 0)]
    busy = [running("ra", "render", {"a": 8}, end=NOW + 1000), running("rb", "render", {"b": 8}, end=NOW + 5000)]
    pending = [job("first", gpus=8, submit=0), job("aged", team="heavy", gpus=8, submit=-7200)]
    by_default = cycle(grid, QUOTAS, pending, busy, usage=HEAVY)
    assert [(r.job_id, r.nodes) for r in by_default.reservations] == [("first", ("a",))]
    config = PolicyConfig(reserve_after_s=3600.0)
    result = cycle(grid, QUOTAS, pending, busy, usage=HEAVY, config=config)
    assert [(r.job_id, r.nodes, r.start) for r in result.reservations] == [
        ("first", ("a",), NOW + 1000),
        ("aged", ("b",), NOW + 5000),
    ]
    assert result.waiting["aged"].estimated_start == NOW + 5000


def test_a_short_job_still_backfills_before_both_reservations() -> None:
    grid = [NodeState("a", "p1", "a100", 8, 4), NodeState("b", "p1", "a100", 8, 4)]
    busy = [running("ra", "render", {"a": 4}, end=NOW + 1000), running("rb", "render", {"b": 4}, end=NOW + 5000)]
    pending = [
        job("first", gpus=8, submit=0),
        job("aged", team="heavy", gpus=8, submit=-7200),
        job("short", team="render", gpus=4, submit=100, walltime=600),
        job("long", team="heavy", gpus=4, submit=200, walltime=90_000),  # after "aged", its team's older job
    ]
    result = cycle(grid, QUOTAS, pending, busy, usage=HEAVY, config=PolicyConfig(reserve_after_s=3600.0))
    assert [r.job_id for r in result.reservations] == ["first", "aged"]
    assert [(a.job_id, a.placement) for a in result.admitted] == [("short", {"a": 4})]  # ends before "first" starts
    # Node b is held for "aged", which "long" would outlast; node a's GPUs went to "short".
    assert result.waiting["long"].reason == "queue"
    assert "held for job aged" in result.waiting["long"].detail


def test_the_oldest_pending_job_gets_its_own_reservation_when_asked() -> None:
    grid = [NodeState("a", "p1", "a100", 8, 0), NodeState("b", "p1", "a100", 8, 0)]
    busy = [running("ra", "render", {"a": 8}, end=NOW + 1000), running("rb", "render", {"b": 8}, end=NOW + 5000)]
    pending = [job("first", gpus=8, submit=0), job("oldest", team="heavy", gpus=8, submit=-600)]
    result = cycle(grid, QUOTAS, pending, busy, usage=HEAVY, config=PolicyConfig(reserve_oldest=1))
    assert [(r.job_id, r.nodes) for r in result.reservations] == [("first", ("a",)), ("oldest", ("b",))]


def test_a_kept_reservation_holds_the_same_nodes_with_a_fresh_start() -> None:
    grid = [NodeState("a", "p1", "a100", 8, 0), NodeState("b", "p1", "a100", 8, 0)]
    busy = [running("ra", "render", {"a": 8}, end=NOW + 1000), running("rb", "render", {"b": 8}, end=NOW + 5000)]
    pending = [job("oldest", team="heavy", gpus=8, submit=-600)]
    last = [Reservation("p1", "oldest", ("b",), NOW + 4000, 200)]
    planned = cycle(grid, QUOTAS, pending, busy, usage=HEAVY, config=PolicyConfig(reserve_oldest=1))
    assert [(r.job_id, r.nodes) for r in planned.reservations] == [("oldest", ("a",))]  # planned afresh: the sooner node
    config = PolicyConfig(reserve_oldest=1, keep_reservations=True)
    result = run_cycle(
        now=NOW, cluster=Cluster(grid), quotas=QUOTAS, pending=pending, running=busy, usage=HEAVY, config=config, previous=last
    )
    assert [(r.job_id, r.nodes, r.start) for r in result.reservations] == [("oldest", ("b",), NOW + 5000)]
    # Ignored unless asked for.
    assert run_cycle(
        now=NOW, cluster=Cluster(grid), quotas=QUOTAS, pending=pending, running=busy, previous=last
    ).reservations == [Reservation("p1", "oldest", ("a",), NOW + 1000, 200)]


def test_a_job_starts_on_its_kept_reservation() -> None:
    grid = [NodeState("a", "p1", "a100", 8, 8), NodeState("b", "p1", "a100", 8, 0)]
    pending = [job("light", gpus=8, submit=100), job("oldest", team="heavy", gpus=8, submit=-600)]
    last = [Reservation("p1", "oldest", ("a",), NOW, 200)]
    config = PolicyConfig(reserve_oldest=1, keep_reservations=True)
    result = run_cycle(
        now=NOW, cluster=Cluster(grid), quotas=QUOTAS, pending=pending, running=[], usage=HEAVY, config=config, previous=last
    )
    # "light" goes first in fair order but may not take node a, held for "oldest" from now on.
    assert [(a.job_id, a.placement) for a in result.admitted] == [("oldest", {"a": 8})]
    assert result.reservations == []
