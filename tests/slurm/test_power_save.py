"""Bursting on Slurm's power-save cloud nodes, on the local cluster with the simulated cloud behind the slots.

The dev cluster declares burst-a10g-[1-2] as State=CLOUD with ResumeProgram/SuspendProgram
(deploy/slurm/grid-burst-power) pointed at this test's live portal. A waiting A10G job makes the
portal propose a burst; nothing is resumed before an operator approves; approval makes Slurm run
ResumeProgram, whose call to the portal starts the simulated instance (its boot starts the slot's
slurmd); the job runs there; the idle node is drained and powered down, and Slurm's SuspendProgram
call makes the portal terminate the instance (its slurmd stops).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from pytest_django import Settings
from pytest_django.live_server_helper import LiveServer
from rest_framework.test import APIClient

from bursting import services as burst_services
from bursting.models import (
    BurstEvent,
    BurstNode,
    BurstPolicy,
    BurstProposal,
    BurstState,
    InstanceType,
    MachineClaim,
    NodeStatus,
    SimCloudInstance,
)
from bursting.slurm_power import SlurmPowerSave
from cluster import services as cluster_services
from cluster.backends.slurm import SlurmBackend
from cluster.backends.slurm.mapping import Power
from cluster.models import Node
from cluster.states import NodeState, PoolKind
from jobs import services as job_services
from jobs.states import WAITING, JobState
from portal.models import ApiToken, Team, User
from quotas.models import TeamQuota
from tests.slurm.conftest import CLOUD_PARTITION, SCRIPT, sync_until, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.postgres]
SLOTS = ("burst-a10g-1", "burst-a10g-2")
RUN = "/run/slurm-portal-dev"


def slurmd_alive(slot: str) -> bool:
    try:
        with open(f"{RUN}/slurmd-{slot}.pid") as handle:
            os.kill(int(handle.read().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def why_not_ready(slot: str) -> str:
    """What the instance, the portal and Slurm say of a slot that did not come up: for the failure message."""
    node = subprocess.run(["scontrol", "show", "node", slot], capture_output=True, text=True, check=False).stdout
    try:
        with open(f"/var/log/slurm/portal-dev-slurmd-{slot}.log") as handle:
            slurmd_log = "".join(handle.readlines()[-15:])
    except OSError as exc:
        slurmd_log = f"(no slurmd log: {exc})"
    return (
        f"instances {list(SimCloudInstance.objects.values_list('name', 'state'))}; "
        f"burst nodes {list(BurstNode.objects.values_list('name', 'status', 'error'))}; "
        f"events {list(BurstEvent.objects.order_by('at', 'id').values_list('action', 'node', 'reason', 'after'))}; "
        f"claims {list(MachineClaim.objects.values_list('name', 'node', 'state'))}; "
        f"slurmd alive {slurmd_alive(slot)}\n{node.strip()}\n-- slurmd log --\n{slurmd_log}"
    )


def powers(slurm: SlurmBackend) -> dict[str, str]:
    return {s.name: s.power for s in slurm.power_slots()}


@pytest.fixture
def power_save(slurm_world: SlurmBackend, live_server: LiveServer, settings: Settings, olivia: User) -> Iterator[SlurmPowerSave]:
    """Slurm's power-save programs reach this test's portal with olivia's token; the slots end powered off."""
    settings.BURST_PROVISION_DELAY_S = 0
    settings.BURST_FAILURE_RATE = 0.0
    settings.BURST_CAPACITY_ERROR_RATE = 0.0
    settings.BURST_SIM_BOOT_COMMAND = f"{SCRIPT} cloud-node up"
    settings.BURST_SIM_HALT_COMMAND = f"{SCRIPT} cloud-node down"
    assert powers(slurm_world) == dict.fromkeys(SLOTS, Power.OFF), "a slot was left powered up by an earlier run"
    token = ApiToken.issue(olivia, "slurm power save")[1]
    done = subprocess.run([str(SCRIPT), "burst-endpoint", str(live_server.url)], input=token, text=True, capture_output=True)
    assert done.returncode == 0, done.stderr
    yield SlurmPowerSave(slurm_world)
    for slot, power in powers(slurm_world).items():
        if power != Power.OFF:
            subprocess.run(["scontrol", "update", f"NodeName={slot}", "State=POWER_DOWN_FORCE"], check=False)
    wait_for(lambda: set(powers(slurm_world).values()) == {Power.OFF}, 60, "every slot powered off")
    for slot in SLOTS:
        subprocess.run([str(SCRIPT), "cloud-node", "down", slot], check=False)
    subprocess.run([str(SCRIPT), "burst-endpoint", "http://127.0.0.1:9"], input="no-portal-configured", text=True, check=False)


def test_an_approved_burst_resumes_a_slurm_cloud_node_through_the_portal_and_suspends_it_when_idle(
    power_save: SlurmPowerSave,
    slurm_world: SlurmBackend,
    alice: User,
    olivia: User,
    vision: Team,
    api: Callable[[User | None], APIClient],
) -> None:
    TeamQuota.objects.create(team=vision, gpu_model="a10g", guarantee=0, limit=8)
    cluster_services.sync_nodes(slurm_world)
    assert {(n.name, n.state, n.pool.kind) for n in Node.objects.filter(pool__name=CLOUD_PARTITION)} == {
        (slot, NodeState.DOWN, PoolKind.CLOUD) for slot in SLOTS
    }
    InstanceType.objects.create(
        name="g5.12xlarge", gpu_model="a10g", gpus=4, price_per_hour=Decimal("5.6720"), pool=CLOUD_PARTITION
    )
    fields = {"name": "a10g", "gpu_model": "a10g", "instance_types": ["g5.12xlarge"], "trigger_pending_gpus": 4}
    # Not released while idle until the test says so: once the node is ready, the portal may admit and
    # dispatch the job by itself (the burst cycle's node sync asks for an admission cycle), and the job
    # may be over before the test looks.
    fields |= {"trigger_wait_s": 0, "trigger_window_s": 0, "max_nodes": 2, "idle_release_s": 3600}
    policy = burst_services.update_policy(olivia, None, fields, power_save)  # checks the slots' shape against slurm.conf

    raw = {
        "name": "cloud",
        "gpu_model": "a10g",
        "gpus_per_node": 4,
        "walltime": 300,
        "command": ["bash", "-c", "echo node=$SLURMD_NODENAME"],
    }
    job = job_services.submit(alice, raw)[0]
    job_services.run_admission_cycle()
    burst_services.cycle(provider=power_save)
    burst = BurstProposal.objects.get()
    assert (burst.state, burst.pool, burst.nodes) == (BurstState.PROPOSED, CLOUD_PARTITION, 1)
    job.refresh_from_db()
    assert job.state in WAITING
    assert powers(slurm_world) == dict.fromkeys(SLOTS, Power.OFF)  # nothing is paid for before an operator says so

    # Someone who is not an operator cannot make the portal start an instance behind a slot.
    refused = api(alice).post("/api/v1/bursting/slurm/resume/", {"nodes": [SLOTS[0]]}, format="json")
    assert refused.status_code == 403 and not SimCloudInstance.objects.exists()

    approved = api(olivia).post(f"/api/v1/bursting/bursts/{burst.pk}/approve/", {}, format="json")
    assert approved.status_code == 200, approved.content
    resumed = wait_for(lambda: BurstEvent.objects.filter(action="slurm_resume").first(), 60, "Slurm's ResumeProgram")
    [slot] = resumed.after["done"]
    assert slot in SLOTS and resumed.after["refused"] == {} and resumed.actor == "olivia"

    def node_ready() -> bool:
        burst_services.cycle(provider=power_save)
        return BurstNode.objects.filter(burst=burst, status=NodeStatus.READY).exists()

    try:
        wait_for(node_ready, 90, "the slot's slurmd to register")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {why_not_ready(slot)}") from exc
    node = BurstNode.objects.get(burst=burst)
    assert node.name == slot and slurmd_alive(slot)  # the portal's node took the slot's name
    assert powers(slurm_world)[slot] == Power.ON
    assert Node.objects.get(name=slot).state == NodeState.READY

    job_services.run_admission_cycle()
    job_services.dispatch(job.pk)
    sync_until(job, {JobState.SUCCEEDED}, timeout=60)
    assert list(job.placement) == [slot]
    assert f"node={slot}" in job_services.read_log(job)  # the slot's own slurmd ran it

    BurstPolicy.objects.filter(pk=policy.pk).update(idle_release_s=0)
    burst_services.cycle(provider=power_save)  # idle (idle_release_s=0): drained, then powered down
    suspended = wait_for(lambda: BurstEvent.objects.filter(action="slurm_suspend").first(), 60, "Slurm's SuspendProgram")
    assert suspended.after == {"done": [slot], "refused": {}}
    wait_for(lambda: powers(slurm_world)[slot] == Power.OFF, 60, "the slot powered off")
    assert not slurmd_alive(slot)
    assert SimCloudInstance.objects.get(name=slot).state == "terminated"
    burst_services.cycle(provider=power_save)
    assert BurstNode.objects.get(burst=burst).status == NodeStatus.RELEASED
    assert BurstProposal.objects.get().state == BurstState.ENDED


def test_slurm_resuming_a_slot_no_burst_holds_is_refused(power_save: SlurmPowerSave, olivia: User) -> None:
    answer = burst_services.slurm_power(olivia, "resume", [SLOTS[1]])
    assert answer.done == [] and "no approved burst holds this node" in answer.refused[SLOTS[1]]
    assert not SimCloudInstance.objects.exists()
