"""A burst end to end on the simulated grid: queue, proposal, approval, provisioning, jobs start, idle release.

Also a rejection, an expiry, a budget that forbids a team's burst, provisioning failures (retry
and give up), and reconciliation of a node the portal did not account for.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from django.core import mail
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings

from bursting import services
from bursting.models import BurstEvent, BurstNode, BurstPolicy, BurstProposal, InstanceType, NodeStatus, SimCloudInstance
from bursting.provider import CloudProvider, SimulatedCloud
from cluster.models import Node
from cluster.simulator.backend import SimulatorBackend
from jobs import services as job_services
from jobs.models import Job, JobEvent
from jobs.states import JobState
from portal.models import User
from quotas import restrictions
from tests.bursting.conftest import Clock

COMMITTING: DjangoCaptureOnCommitCallbacks  # set by the autouse fixture below, for committed()
T = TypeVar("T")


@pytest.fixture(autouse=True)
def committing(django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks) -> None:
    """Work queued on commit (e-mails, provisioning, admission) runs as it would after a real commit."""
    global COMMITTING
    COMMITTING = django_capture_on_commit_callbacks


def committed(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    with COMMITTING(execute=True):
        return call(*args, **kwargs)


def run_cycle(clock: Clock, provider: CloudProvider, seconds: float = 0) -> dict[str, int]:
    """Admission first (the first A10G job takes the on-prem node), then the burst cycle."""
    clock.advance(seconds)
    job_services.run_admission_cycle()
    return committed(services.cycle, clock.now, provider)


def test_it_proposes_the_cheapest_type_that_starts_the_queue(
    alice: User,
    olivia: User,
    policy: BurstPolicy,
    waiting: Callable[..., list[Job]],
    clock: Clock,
    cloud: Callable[..., SimulatedCloud],
) -> None:
    waiting(alice, 4, gpus=4, walltime=7200)
    run_cycle(clock, cloud())
    burst = BurstProposal.objects.get()
    # three 4-GPU jobs: 3x g5.12xlarge (3 x 5.672/h) beats 2x g5.48xlarge (2 x 16.288/h)
    assert (burst.state, burst.instance_type.name, burst.nodes, burst.duration_s) == ("proposed", "g5.12xlarge", 3, 7200)
    assert burst.projected_cost == Decimal("34.03")  # 3 nodes x 2 h x 5.672
    assert burst.projection["teams"][0]["team"] == "vision" and burst.projection["teams"][0]["cost"] == "34.03"
    assert [a["instance_type"] for a in burst.projection["alternatives"]][:2] == ["g5.12xlarge", "g5.48xlarge"]
    assert len(mail.outbox) == 1 and "olivia@example.org" in mail.outbox[0].to
    assert BurstEvent.objects.filter(burst=burst, action="proposed").exists()


def test_approval_provisions_nodes_jobs_start_there_and_idle_nodes_are_released(
    alice: User,
    olivia: User,
    policy: BurstPolicy,
    waiting: Callable[..., list[Job]],
    clock: Clock,
    cloud: Callable[..., SimulatedCloud],
) -> None:
    provider = cloud()
    waiting(alice, 1, gpus=4, walltime=3600)
    jobs = waiting(alice, 2, gpus=4, walltime=3600)
    waiting(alice, 1, gpus=4, walltime=3600)
    run_cycle(clock, provider)
    burst = BurstProposal.objects.get()
    assert burst.nodes == 3

    committed(services.approve, olivia, burst.pk, nodes=2, max_hours="0.5")
    burst.refresh_from_db()
    assert (burst.state, burst.approved_nodes, burst.approved_cost) == ("provisioning", 2, Decimal("5.67"))
    assert SimCloudInstance.objects.count() == 2  # asked once the approval committed (eager tasks)

    run_cycle(clock, provider, 10)
    assert not Node.objects.filter(pool__name="burst-a10g").exists()  # still booting
    run_cycle(clock, provider, 30)
    burst.refresh_from_db()
    assert burst.state == "active" and Node.objects.filter(pool__name="burst-a10g").count() == 2

    job_services.run_admission_cycle()
    started = Job.objects.filter(pk__in=[j.pk for j in jobs], state__in=["admitted", "dispatched", "running"])
    assert started.count() == 2
    assert JobEvent.objects.filter(job__in=jobs, to_state=JobState.ADMITTED, pool="burst-a10g").count() == 2  # billed as cloud

    for job in Job.objects.exclude(state__in=["cancelled", "succeeded", "failed"]):
        job_services.cancel(alice, job, "done early")
    run_cycle(clock, provider, 1)  # idle from now on
    run_cycle(clock, provider, 601)
    burst.refresh_from_db()
    assert burst.state == "ended"
    assert set(BurstNode.objects.values_list("status", flat=True)) == {NodeStatus.RELEASED}
    assert not Node.objects.filter(pool__name="burst-a10g").exists()
    actions = list(BurstEvent.objects.filter(burst=burst).order_by("at", "id").values_list("action", flat=True))
    assert actions[:3] == ["proposed", "approved", "provisioning"] and actions[-1] == "ended"


def test_a_rejection_needs_a_reason_and_is_final(
    alice: User,
    olivia: User,
    policy: BurstPolicy,
    waiting: Callable[..., list[Job]],
    clock: Clock,
    cloud: Callable[..., SimulatedCloud],
) -> None:
    waiting(alice, 4)
    run_cycle(clock, cloud())
    burst = BurstProposal.objects.get()
    with pytest.raises(services.BurstActionError, match="reason"):
        services.reject(olivia, burst.pk, "  ")
    services.reject(olivia, burst.pk, "on-prem nodes come back tonight")
    with pytest.raises(services.BurstActionError, match="not waiting for approval"):
        committed(services.approve, olivia, burst.pk)
    assert BurstProposal.objects.get().state == "rejected"
    assert BurstEvent.objects.get(burst=burst, action="rejected").reason == "on-prem nodes come back tonight"


def test_an_undecided_proposal_expires(
    alice: User,
    olivia: User,
    policy: BurstPolicy,
    waiting: Callable[..., list[Job]],
    clock: Clock,
    cloud: Callable[..., SimulatedCloud],
) -> None:
    waiting(alice, 4)
    run_cycle(clock, cloud())
    run_cycle(clock, cloud(), 3601)
    burst = BurstProposal.objects.order_by("id").first()
    assert burst is not None
    assert burst.state == "expired"
    with pytest.raises(services.BurstActionError, match="not waiting"):
        committed(services.approve, olivia, burst.pk)


def test_approval_bounds_are_checked_and_named(
    alice: User,
    olivia: User,
    policy: BurstPolicy,
    waiting: Callable[..., list[Job]],
    clock: Clock,
    cloud: Callable[..., SimulatedCloud],
) -> None:
    waiting(alice, 4)
    run_cycle(clock, cloud())
    burst = BurstProposal.objects.get()
    with pytest.raises(services.BurstActionError, match="nodes: must be 1-3"):
        committed(services.approve, olivia, burst.pk, nodes=5)
    with pytest.raises(services.BurstActionError, match="max_hours"):
        committed(services.approve, olivia, burst.pk, max_hours="99")
    with pytest.raises(services.BurstActionError, match="max_hours: a number"):
        committed(services.approve, olivia, burst.pk, max_hours="soon")


def test_a_non_operator_cannot_approve(
    alice: User,
    bob: User,
    policy: BurstPolicy,
    waiting: Callable[..., list[Job]],
    clock: Clock,
    cloud: Callable[..., SimulatedCloud],
) -> None:
    waiting(alice, 4)
    run_cycle(clock, cloud())
    burst = BurstProposal.objects.get()
    for user in (alice, bob):
        with pytest.raises(services.BurstForbidden):
            services.approve(user, burst.pk)
    assert BurstProposal.objects.get().state == "proposed"


def test_a_team_whose_budget_forbids_bursts_is_left_out_with_the_reason(
    alice: User,
    carol: User,
    policy: BurstPolicy,
    waiting: Callable[..., list[Job]],
    clock: Clock,
    cloud: Callable[..., SimulatedCloud],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waiting(alice, 4)
    waiting(carol, 3)
    render_id = carol.team_ids[0]
    provider = lambda team_id: {restrictions.DENY_BURSTS} if team_id == render_id else set()  # noqa: E731
    monkeypatch.setattr(restrictions, "_providers", [provider])
    run_cycle(clock, cloud())
    burst = BurstProposal.objects.get()
    assert [t["team"] for t in burst.projection["teams"]] == ["vision"]
    assert burst.nodes == 3
    excluded = burst.projection["excluded"]
    assert excluded == [
        {"team": "render", "reason": "the team's budget forbids bursts (deny_bursts in force)", "jobs": 3, "gpus": 12}
    ]


def test_auto_approval_under_the_configured_cost(
    alice: User,
    olivia: User,
    policy: BurstPolicy,
    waiting: Callable[..., list[Job]],
    clock: Clock,
    cloud: Callable[..., SimulatedCloud],
) -> None:
    policy.auto_approve_below = Decimal("50.00")
    policy.save()
    waiting(alice, 3, walltime=3600)
    run_cycle(clock, cloud())
    burst = BurstProposal.objects.get()
    assert burst.state == "provisioning" and burst.decided_by == "auto-approve"


def test_a_failed_node_is_asked_for_again_then_given_up_and_the_burst_fails(
    alice: User,
    olivia: User,
    policy: BurstPolicy,
    waiting: Callable[..., list[Job]],
    clock: Clock,
    cloud: Callable[..., SimulatedCloud],
    settings: Settings,
) -> None:
    settings.BURST_FAILURE_RATE = 1.0  # the provisioning task's own provider reads it
    provider = cloud(failure_rate=1.0)
    waiting(alice, 2, walltime=3600)
    policy.trigger_pending_gpus = 4
    policy.save()
    run_cycle(clock, provider)
    burst = BurstProposal.objects.get()
    committed(services.approve, olivia, burst.pk)
    run_cycle(clock, provider, 31)  # first attempt failed to boot: a second is asked for
    assert BurstNode.objects.filter(status=NodeStatus.FAILED).count() == burst.nodes
    assert BurstNode.objects.filter(status=NodeStatus.REQUESTED, attempt=2).count() == burst.nodes
    run_cycle(clock, provider, 31)
    run_cycle(clock, provider, 1)
    burst.refresh_from_db()
    assert burst.state == "failed" and "no node came up" in burst.error
    assert not BurstNode.objects.filter(status__in=[NodeStatus.REQUESTED, NodeStatus.READY]).exists()
    assert not SimCloudInstance.objects.exclude(state="terminated").exists()  # nothing left to pay for
    assert BurstEvent.objects.filter(burst=burst, action="node_given_up").count() == burst.nodes


def test_a_capacity_error_counts_as_an_attempt(
    alice: User,
    olivia: User,
    policy: BurstPolicy,
    waiting: Callable[..., list[Job]],
    clock: Clock,
    cloud: Callable[..., SimulatedCloud],
    settings: Settings,
) -> None:
    settings.BURST_CAPACITY_ERROR_RATE = 1.0
    provider = cloud(capacity_error_rate=1.0)
    waiting(alice, 4)
    run_cycle(clock, provider)
    burst = BurstProposal.objects.get()
    committed(services.approve, olivia, burst.pk)
    run_cycle(clock, provider, 1)
    run_cycle(clock, provider, 1)
    burst.refresh_from_db()
    assert burst.state == "failed" and "InsufficientInstanceCapacity" in burst.error
    assert SimCloudInstance.objects.count() == 0


def test_reconcile_releases_a_node_the_portal_does_not_pay_for(
    grid: SimulatorBackend, clock: Clock, cloud: Callable[..., SimulatedCloud], catalogue: dict[str, InstanceType]
) -> None:
    provider = cloud(delay_s=0)
    provider.request("burst-a10g-stray", "burst-a10g", "g5.12xlarge")
    counts = services.reconcile(provider, clock.now)
    assert counts["orphans"] == 1
    assert SimCloudInstance.objects.get().state == "terminated"
    assert BurstEvent.objects.get(action="orphan_released").node == "burst-a10g-stray"


def test_a_repeated_provisioning_request_never_makes_a_second_node(
    alice: User,
    olivia: User,
    policy: BurstPolicy,
    waiting: Callable[..., list[Job]],
    clock: Clock,
    cloud: Callable[..., SimulatedCloud],
) -> None:
    provider = cloud()
    waiting(alice, 4)
    run_cycle(clock, provider)
    burst = BurstProposal.objects.get()
    committed(services.approve, olivia, burst.pk)
    services.provision(burst.pk, provider)
    services.provision(burst.pk, provider)
    assert SimCloudInstance.objects.count() == burst.nodes
