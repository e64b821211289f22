"""The Slurm power-save provider against a stand-in for slurmctld: slots, claims, a reused slot, refusals.

The whole loop on a real Slurm is tests/slurm/test_power_save.py; here the stand-in powers slots up
and down at once and calls the provider's resume and suspend as ResumeProgram and SuspendProgram
would, so that two bursts in a row on the same slot, a cloud that refuses, and a slot Slurm gave up
on can be played without waiting for Slurm's timers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import pytest

from bursting import services
from bursting.models import BurstNode, BurstPolicy, BurstProposal, InstanceType, MachineClaim, NodeStatus, SimCloudInstance
from bursting.provider import SimulatedSlotCloud
from bursting.slurm_power import SlurmPowerSave
from cluster.backends import BackendRejected, BackendUnavailable
from cluster.backends.slurm.mapping import Power, PowerSlot
from jobs.models import Job
from portal.models import User
from tests.bursting.conftest import Clock

SLOTS = ("burst-a10g-1", "burst-a10g-2")


@dataclass
class Config:
    cloud_partitions: frozenset[str] = frozenset({"burst-a10g"})


@dataclass
class FakeSlurm:
    """slurmctld's power saving, as far as the provider sees it; `provider` plays the power-save programs."""

    config: Config = field(default_factory=Config)
    power: dict[str, str] = field(default_factory=lambda: dict.fromkeys(SLOTS, Power.OFF))
    provider: SlurmPowerSave | None = None
    gpus: int = 4

    def power_slots(self) -> list[PowerSlot]:
        running = set(SimCloudInstance.objects.filter(state="running").values_list("name", flat=True))
        for name, power in self.power.items():
            if power == Power.RESUMING and name in running:  # its slurmd registered
                self.power[name] = Power.ON
        return [PowerSlot(n, ("burst-a10g",), "a10g", self.gpus, p) for n, p in sorted(self.power.items())]

    def power_up(self, node: str) -> None:
        assert self.power[node] == Power.OFF and self.provider is not None
        self.power[node] = Power.RESUMING
        self.provider.resume([node])  # ResumeProgram

    def power_down(self, node: str) -> None:
        assert self.provider is not None
        self.power[node] = Power.OFF
        self.provider.suspend([node])  # SuspendProgram


@pytest.fixture
def slurm(clock: Clock) -> tuple[FakeSlurm, SlurmPowerSave]:
    fake = FakeSlurm()
    provider = SlurmPowerSave(fake, SimulatedSlotCloud(clock, delay_s=30, failure_rate=0.0, capacity_error_rate=0.0), clock)  # type: ignore[arg-type]
    fake.provider = provider
    return fake, provider


@pytest.fixture
def slurm_policy(db: None) -> BurstPolicy:
    InstanceType.objects.create(name="g5.12xlarge", gpu_model="a10g", gpus=4, price_per_hour=Decimal("5.672"), pool="burst-a10g")
    policy = BurstPolicy.objects.create(
        name="a10g",
        gpu_model="a10g",
        trigger_pending_gpus=4,
        trigger_wait_s=0,
        trigger_window_s=0,
        max_nodes=1,
        idle_release_s=600,
    )
    policy.instance_types.set(InstanceType.objects.all())
    return policy


def burst_once(
    user: User, provider: SlurmPowerSave, clock: Clock, waiting: Callable[..., list[Job]], olivia: User
) -> tuple[BurstProposal, BurstNode]:
    """One waiting job, a proposal, its approval, the slot's boot: the burst's ready node."""
    waiting(user, 1, gpus=4)
    services.cycle(clock.now, provider)
    burst = BurstProposal.objects.get(state="proposed")
    services.approve(olivia, burst.pk)
    services.provision(burst.pk, provider)
    services.cycle(clock.advance(31), provider)
    return burst, BurstNode.objects.get(burst=burst)


def test_two_bursts_in_a_row_resume_the_same_slot_and_each_node_takes_its_name(
    slurm: tuple[FakeSlurm, SlurmPowerSave],
    slurm_policy: BurstPolicy,
    alice: User,
    olivia: User,
    clock: Clock,
    waiting: Callable[..., list[Job]],
) -> None:
    fake, provider = slurm
    first, node = burst_once(alice, provider, clock, waiting, olivia)
    assert (node.name, node.status) == (SLOTS[0], NodeStatus.READY) and fake.power[SLOTS[0]] == Power.ON
    assert MachineClaim.objects.get().node == SLOTS[0]

    services.cycle(clock.advance(601), provider)  # no job was placed there: idle for idle_release_s, released
    assert fake.power[SLOTS[0]] == Power.OFF and SimCloudInstance.objects.get(name=SLOTS[0]).state == "terminated"
    first.refresh_from_db()
    assert first.state == "ended"

    _, again = burst_once(alice, provider, clock, waiting, olivia)
    assert (again.name, again.status) == (SLOTS[0], NodeStatus.READY)  # the slot's name moved to the new node
    assert BurstNode.objects.get(burst=first).name == f"{SLOTS[0]}~{node.pk}"
    assert SimCloudInstance.objects.get(name=SLOTS[0]).state == "running"


def test_resume_refuses_a_slot_no_burst_holds_and_suspend_of_an_unknown_slot_is_harmless(
    slurm: tuple[FakeSlurm, SlurmPowerSave], olivia: User
) -> None:
    _, provider = slurm
    answer = provider.resume([SLOTS[1]])
    assert answer.done == [] and "no approved burst holds this node" in answer.refused[SLOTS[1]]
    assert provider.suspend(["burst-a10g-9"]).done == ["burst-a10g-9"]
    assert not SimCloudInstance.objects.exists()


def test_a_cloud_that_refuses_the_instance_fails_the_claim_and_the_slot_is_asked_for_again(
    slurm: tuple[FakeSlurm, SlurmPowerSave],
    slurm_policy: BurstPolicy,
    alice: User,
    olivia: User,
    clock: Clock,
    waiting: Callable[..., list[Job]],
) -> None:
    _, provider = slurm
    provider.cloud = SimulatedSlotCloud(clock, delay_s=30, failure_rate=0.0, capacity_error_rate=1.0)
    waiting(alice, 1, gpus=4)
    services.cycle(clock.now, provider)
    burst = BurstProposal.objects.get()
    services.approve(olivia, burst.pk)
    services.provision(burst.pk, provider)
    assert MachineClaim.objects.get().state == "failed"
    services.cycle(clock.advance(1), provider)  # reconcile: the failed slot is powered down, a retry claims a slot again
    assert [(n.status, n.attempt) for n in BurstNode.objects.order_by("attempt")] == [
        (NodeStatus.FAILED, 1),
        (NodeStatus.REQUESTED, 2),
    ]
    assert BurstNode.objects.get(attempt=1).error == "the cloud refused the instance"


def test_no_free_slot_is_retried_later_without_spending_an_attempt_and_a_wrong_shape_is_refused(
    slurm: tuple[FakeSlurm, SlurmPowerSave], db: None
) -> None:
    fake, provider = slurm
    fake.power = dict.fromkeys(SLOTS, Power.SUSPENDING)
    with pytest.raises(BackendUnavailable, match="no powered-down node is free"):
        provider.request("burst-a10g-b1-01", "burst-a10g", "g5.12xlarge")
    assert not MachineClaim.objects.exists()
    with pytest.raises(BackendRejected, match="4× a10g, not 8× a10g"):
        provider.check("burst-a10g", "a10g", 8)
    with pytest.raises(BackendRejected, match="SLURM_CLOUD_PARTITIONS"):
        provider.check("a100", "a100", 8)


def test_a_power_up_slurm_refuses_leaves_no_claim_behind(slurm: tuple[FakeSlurm, SlurmPowerSave], db: None) -> None:
    fake, provider = slurm

    def refuse(node: str) -> None:
        raise BackendRejected(f"Slurm refused to update node {node}: Invalid node state specified")

    fake.power_up = refuse  # type: ignore[method-assign]
    with pytest.raises(BackendRejected, match="Invalid node state"):
        provider.request("burst-a10g-b1-01", "burst-a10g", "g5.12xlarge")
    assert not MachineClaim.objects.exists()
