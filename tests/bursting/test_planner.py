"""The pure burst planner: trigger, who is left out, packing of gangs, the cheapest choice, the projection."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from bursting.planner import (
    InstanceOffer,
    PlanError,
    PlanPolicy,
    TriggerPolicy,
    WaitingJob,
    approval_cost,
    pack,
    plan,
    projected_cost,
    trigger_reason,
)

G5_12 = InstanceOffer("g5.12xlarge", "a10g", 4, Decimal("5.672"))
G5_48 = InstanceOffer("g5.48xlarge", "a10g", 8, Decimal("16.288"))
P3_8 = InstanceOffer("p3.8xlarge", "v100", 4, Decimal("12.24"))
P4D = InstanceOffer("p4d.24xlarge", "a100", 8, Decimal("32.7726"))
POLICY = PlanPolicy(min_nodes=0, max_nodes=10, max_duration_s=4 * 3600)


def job(
    i: int, gpus: int = 4, nodes: int = 1, team: str = "vision", models: tuple[str, ...] = ("a10g",), walltime: int = 3600
) -> WaitingJob:
    return WaitingJob(i, team, frozenset(models), gpus, nodes, walltime)


def test_the_trigger_fires_on_pending_gpus_or_the_oldest_wait_and_is_off_at_zero() -> None:
    assert trigger_reason(8, 0, TriggerPolicy(8, 0)) == "8 GPUs waiting (threshold 8)"
    assert trigger_reason(7, 0, TriggerPolicy(8, 0)) == ""
    assert "oldest job waiting 30 min" in trigger_reason(1, 1800, TriggerPolicy(0, 1800))
    assert trigger_reason(1000, 10**6, TriggerPolicy(0, 0)) == ""


def test_the_cheapest_type_that_starts_every_job_wins() -> None:
    result = plan([job(i) for i in range(3)], [G5_48, G5_12], POLICY)
    assert result is not None
    assert (result.instance_type, result.nodes, result.cost) == ("g5.12xlarge", 3, Decimal("17.02"))
    assert [a.instance_type for a in result.alternatives] == ["g5.12xlarge", "g5.48xlarge"]
    assert result.alternatives[1].cost == Decimal("32.58")  # 2 nodes x 1 h x 16.288


def test_small_jobs_share_a_node() -> None:
    result = plan([job(i, gpus=1) for i in range(8)], [G5_12, G5_48], POLICY)
    assert result is not None
    assert (result.instance_type, result.nodes) == ("g5.12xlarge", 2)  # 2 x 5.672 < 1 x 16.288


def test_a_gang_needs_distinct_nodes_and_a_type_big_enough() -> None:
    result = plan([job(1, gpus=8, nodes=2)], [G5_12, G5_48], POLICY)
    assert result is not None
    assert (result.instance_type, result.nodes) == ("g5.48xlarge", 2)
    assert plan([job(1, gpus=8, nodes=2)], [G5_12], POLICY) is None


def test_only_types_of_an_accepted_gpu_model_are_used() -> None:
    result = plan([job(1, models=("v100",)), job(2, models=("a100",), gpus=8)], [G5_12, P3_8, P4D], POLICY)
    assert result is not None
    assert result.instance_type == "p4d.24xlarge"  # 8 GPUs started beats p3.8xlarge's 4
    assert [(e.reason, e.jobs) for e in result.not_started] == [("needs v100, not a100", 1)]


def test_more_gpus_started_beats_a_lower_cost() -> None:
    policy = PlanPolicy(0, 1, 3600)
    result = plan([job(1, gpus=8)], [G5_12, G5_48], policy)
    assert result is not None
    assert result.instance_type == "g5.48xlarge"


def test_the_node_limit_caps_the_proposal_and_says_who_is_not_started() -> None:
    result = plan([job(i) for i in range(5)], [G5_12], PlanPolicy(0, 2, 3600))
    assert result is not None
    assert result.nodes == 2 and result.job_ids == (0, 1)
    assert [(e.reason, e.jobs, e.gpus) for e in result.not_started] == [("beyond the policy's maximum node count", 3, 12)]


def test_oldest_jobs_go_first_and_a_refused_shape_does_not_block_smaller_ones() -> None:
    jobs = [job(1, gpus=4), job(2, gpus=4, nodes=2), job(3, gpus=2), job(4, gpus=2)]
    result = plan(jobs, [G5_12], PlanPolicy(0, 2, 3600))
    assert result is not None
    assert result.job_ids == (1, 3, 4)


def test_min_nodes_is_a_floor_and_duration_is_the_longest_walltime_up_to_the_cap() -> None:
    result = plan([job(1, walltime=600), job(2, walltime=36000)], [G5_12], PlanPolicy(3, 10, 7200))
    assert result is not None
    assert (result.nodes, result.duration_s) == (3, 7200)
    assert result.cost == projected_cost(3, 7200, G5_12.price_per_hour) == Decimal("34.03")


def test_team_costs_and_idle_add_up_to_the_total() -> None:
    jobs = [job(1, gpus=1, team="a", walltime=1800), job(2, gpus=3, team="b", walltime=3600), job(3, gpus=2, team="a")]
    result = plan(jobs, [G5_12], POLICY)
    assert result is not None
    assert sum((t.cost for t in result.teams), result.idle_cost) == result.cost
    assert {t.team: t.gpu_hours for t in result.teams} == {"a": Decimal("2.50"), "b": Decimal("3.00")}


def test_teams_denied_or_not_allowed_are_left_out_with_the_reason() -> None:
    jobs = [job(1, team="vision"), job(2, team="render"), job(3, team="physics")]
    policy = PlanPolicy(0, 10, 3600, allowed_teams=frozenset({"vision", "render"}))
    result = plan(jobs, [G5_12], policy, {"render": "budget forbids bursts"})
    assert result is not None
    assert result.job_ids == (1,)
    assert [(e.team, e.reason) for e in result.excluded] == [
        ("physics", "the burst policy does not include this team"),
        ("render", "budget forbids bursts"),
    ]


def test_nothing_to_start_is_no_proposal() -> None:
    assert plan([], [G5_12], POLICY) is None
    assert plan([job(1, models=("h100",))], [G5_12], POLICY) is None


def test_bad_input_names_the_field() -> None:
    with pytest.raises(PlanError, match="gpus"):
        InstanceOffer("x", "a10g", 0, Decimal(1))
    with pytest.raises(PlanError, match="price_per_hour"):
        InstanceOffer("x", "a10g", 4, Decimal(0))
    with pytest.raises(PlanError, match="min_nodes"):
        PlanPolicy(5, 2, 3600)
    with pytest.raises(PlanError, match="max_duration_s"):
        PlanPolicy(0, 2, 10)
    with pytest.raises(PlanError, match="instance_types"):
        plan([job(1)], [G5_12, G5_12], POLICY)


def test_approval_cost_checks_its_bounds() -> None:
    assert approval_cost(Decimal("5.672"), 3, 7200, 2, 3600) == Decimal("11.34")
    with pytest.raises(PlanError, match="nodes"):
        approval_cost(Decimal("5.672"), 3, 7200, 4, 3600)
    with pytest.raises(PlanError, match="max_hours"):
        approval_cost(Decimal("5.672"), 3, 7200, 2, 7201)


@pytest.mark.parametrize("seed", range(25))
def test_random_demand_never_overfills_a_node_or_exceeds_the_limit(seed: int) -> None:
    rng = random.Random(seed)
    offer = rng.choice([G5_12, G5_48])
    jobs = [job(i, gpus=rng.choice([1, 2, 4, 8]), nodes=rng.choice([1, 1, 2, 3])) for i in range(rng.randint(1, 60))]
    policy = PlanPolicy(0, rng.randint(1, 12), 3600)
    packed = pack(offer, jobs, policy)
    assert packed.nodes <= policy.max_nodes
    assert packed.gpus_started <= packed.nodes * offer.gpus
    assert all(j.gpus_per_node <= offer.gpus and j.nodes <= packed.nodes for j in packed.started)
    assert packed.gpus_started == sum(j.gpus for j in packed.started)
