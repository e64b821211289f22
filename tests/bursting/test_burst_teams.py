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
from jobs import policy
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


def test_outsiders_beyond_the_reruns_are_dropped_from_the_burst_nodes_not_admitted_there() -> None:
    """Each rerun leaves out the jobs the last run put on the burst; past BURST_RERUNS the rest is dropped."""
    burst = {"burst-a10g-b1-01": cluster_services.TeamsOnly(frozenset({"vision"}), "node burst-a10g-b1-01 is burst #1's")}
    pending = [policy.PendingJob(i, "render", "a10g", 4, 1, "standard", float(i), 3600.0) for i in range(10)]
    runs: list[list[policy.JobId]] = []

    def run(pending: list[policy.PendingJob]) -> policy.CycleResult:  # the first waiting job always lands on the burst
        runs.append([p.id for p in pending])
        first = pending[0].id
        return policy.CycleResult(
            admitted=[policy.Admission(first, "burst-a10g", {"burst-a10g-b1-01": 4})],
            preempted=[policy.Preemption(99, "reclaim", first, 0.0)],
        )

    result, kept = job_services._run_keeping_burst_nodes(run, pending, burst)
    assert runs == [list(range(10)), list(range(1, 10)), list(range(2, 10)), list(range(3, 10))]
    assert (result.admitted, result.preempted) == ([], [])
    assert sorted(kept) == [0, 1, 2, 3] and kept[3] == "node burst-a10g-b1-01 is burst #1's"
