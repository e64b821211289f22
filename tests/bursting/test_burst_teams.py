"""A burst a policy paid for on behalf of some teams is theirs: admission keeps other teams' jobs off its nodes.

On the simulated grid through the whole portal: vision's queue makes a burst of a policy for vision
only; render's job, older and first in fair share, would take the burst node; it waits instead,
saying why, and vision's job starts there in the same cycle.
"""

from __future__ import annotations

from collections.abc import Callable

from bursting import services
from bursting.models import BurstNode, BurstPolicy, BurstProposal, NodeStatus
from bursting.provider import SimulatedCloud
from cluster import services as cluster_services
from jobs import admission, policy
from jobs import services as job_services
from jobs.models import Job
from jobs.states import HOLDS_GPUS, JobState, PendingReason
from portal.models import Team, User
from quotas.models import TeamQuota
from tests.bursting.conftest import Clock
from tests.bursting.test_burst_flow import committed, committing, run_cycle  # noqa: F401 - committing: autouse


def a_ready_burst_for_vision(
    alice: User,
    carol: User,
    olivia: User,
    policy: BurstPolicy,
    waiting: Callable[..., list[Job]],
    clock: Clock,
    cloud: SimulatedCloud,
) -> tuple[Job, list[Job], BurstNode]:
    """alice's first job takes the on-prem A10G node; carol's job, then two of alice's, wait; one burst node
    boots, and the burst cycle that sees it ready runs admission (as after every node that joins)."""
    waiting(alice, 1, gpus=4)
    job_services.run_admission_cycle()
    [outsider] = waiting(carol, 1, gpus=4)
    insiders = waiting(alice, 2, gpus=4)
    run_cycle(clock, cloud)
    burst = BurstProposal.objects.get()
    committed(services.approve, olivia, burst.pk, nodes=1)
    run_cycle(clock, cloud, 31)
    [node] = BurstNode.objects.filter(burst=burst, status=NodeStatus.READY)
    return outsider, insiders, node


def test_another_teams_job_waits_saying_why_and_the_teams_job_takes_the_burst_node(
    alice: User, carol: User, olivia: User, vision: Team, render: Team, policy: BurstPolicy,
    waiting: Callable[..., list[Job]], clock: Clock, cloud: Callable[..., SimulatedCloud],
) -> None:  # fmt: skip
    for team in (vision, render):
        TeamQuota.objects.create(team=team, gpu_model="a10g", guarantee=0, limit=16)
    policy.allowed_teams.set([vision])
    outsider, insiders, node = a_ready_burst_for_vision(alice, carol, olivia, policy, waiting, clock, cloud())
    assert "render" in {row["team"] for row in node.burst.projection["excluded"]}  # the proposal left render out
    assert cluster_services.teams_only_nodes()[node.name].teams == {"vision"}

    outsider.refresh_from_db()
    assert outsider.state == JobState.PENDING and outsider.reason == PendingReason.BURST_TEAMS
    assert outsider.reason_detail == (
        f"waits for GPUs its team may use: node {node.name} is burst #{node.burst_id}'s, "
        f"paid for by policy {policy.name} for vision"
    )
    on_burst = [j for j in Job.objects.filter(pk__in=[j.pk for j in insiders]) if node.name in j.placement]
    assert len(on_burst) == 1 and on_burst[0].state in HOLDS_GPUS

    job_services.run_admission_cycle()  # the node is full now: render's job waits for capacity like any other
    outsider.refresh_from_db()
    assert outsider.state == JobState.PENDING and outsider.reason == PendingReason.CAPACITY


def test_a_policy_for_every_team_lets_the_first_in_line_take_the_burst_node(
    alice: User, carol: User, olivia: User, vision: Team, render: Team, policy: BurstPolicy,
    waiting: Callable[..., list[Job]], clock: Clock, cloud: Callable[..., SimulatedCloud],
) -> None:  # fmt: skip
    """The same queue without allowed teams: render's job is first in fair share and gets the node (what
    the first test keeps from happening)."""
    for team in (vision, render):
        TeamQuota.objects.create(team=team, gpu_model="a10g", guarantee=0, limit=16)
    outsider, _, node = a_ready_burst_for_vision(alice, carol, olivia, policy, waiting, clock, cloud())
    assert cluster_services.teams_only_nodes() == {}

    outsider.refresh_from_db()
    assert outsider.state in HOLDS_GPUS and node.name in outsider.placement


def node(name: str, pool: str, free: int, gpus: int = 8, cloud: bool = False) -> policy.NodeState:
    return policy.NodeState(name, pool, "a100", gpus, free, is_cloud=cloud)


QUOTAS = [policy.Quota(team, "a100", 0, 64) for team in ("vision", "render")]


def test_no_job_of_another_team_is_placed_or_reserved_on_a_pool_only_some_teams_may_use() -> None:
    """The pure core: render's jobs never land on vision's burst pool, and render's blocked gang holds its
    reservation on the nodes it may use, in the same cycle, instead of waiting a cycle out."""
    grid = policy.Cluster(
        [node("onprem-1", "onprem", 0), node("onprem-2", "onprem", 2), node("burst-1", "burst~vision", 8, cloud=True)],
        {"burst~vision": frozenset({"vision"})},
    )
    running = [
        policy.RunningJob(100, "vision", "a100", {"onprem-1": 8}, "standard", 0.0, 600.0),
        policy.RunningJob(101, "vision", "a100", {"onprem-2": 6}, "standard", 0.0, 900.0),
    ]
    pending = [
        policy.PendingJob(1, "render", "a100", 8, 1, "standard", 1.0, 3600.0),  # would fit only on the burst
        policy.PendingJob(2, "render", "a100", 1, 1, "standard", 2.0, 60.0),
        policy.PendingJob(3, "vision", "a100", 4, 1, "standard", 3.0, 3600.0),
    ]
    result = policy.run_cycle(now=10.0, cluster=grid, quotas=QUOTAS, pending=pending, running=running)
    placed = {a.job_id: dict(a.placement) for a in result.admitted}
    assert placed[3] == {"burst-1": 4}  # vision's job takes its burst
    assert placed[2] == {"onprem-2": 1}  # render's small job goes where render may go
    assert 1 not in placed
    [held] = [r for r in result.reservations if r.job_id == 1]
    assert held.pool == "onprem" and set(held.nodes) <= {"onprem-1", "onprem-2"}
    assert result.waiting[1].reason in (policy.Reason.CAPACITY, policy.Reason.FRAGMENTATION)


def test_without_team_only_pools_the_same_jobs_use_every_node() -> None:
    grid = policy.Cluster([node("onprem-1", "onprem", 0), node("burst-1", "burst", 8, cloud=True)])
    pending = [policy.PendingJob(1, "render", "a100", 8, 1, "standard", 1.0, 3600.0)]
    result = policy.run_cycle(now=10.0, cluster=grid, quotas=QUOTAS, pending=pending, running=[])
    assert [dict(a.placement) for a in result.admitted] == [{"burst-1": 8}]


def test_the_backlogs_pass_keeps_the_same_team_only_pools() -> None:
    """The backlog's pass over the GPUs that free up next sees the pools only some teams may use too."""
    grid = policy.Cluster(
        [node("onprem-1", "bursting~vision", 8), node("onprem-2", "onprem", 8)], {"bursting~vision": frozenset({"vision"})}
    )
    view = admission.BacklogView.of(grid, {}, [], policy.DEFAULT_CLASSES)
    backlog = admission.Backlog(view=view, budget_gpus=64, now=0.0, quotas=QUOTAS, usage={}, config=policy.PolicyConfig())
    layer = backlog._next_layer({}, 64)
    assert layer.pool_teams == {"bursting~vision": frozenset({"vision"})}
    pending = [policy.PendingJob(1, "render", "a100", 8, 1, "standard", 1.0, 3600.0)]
    result = policy.run_cycle(now=0.0, cluster=layer, quotas=QUOTAS, pending=pending, running=[])
    assert [dict(a.placement) for a in result.admitted] == [{"onprem-2": 8}]  # never vision's node
