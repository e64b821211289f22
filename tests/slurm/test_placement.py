"""On a real Slurm, jobs start on the nodes the portal placed them on (`SLURM_PIN_NODES`)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from pytest_django import Settings

from cluster.backends.slurm import SlurmBackend
from jobs import services as job_services
from jobs.models import Job
from jobs.states import JobState
from portal.models import User
from quotas.models import TeamQuota
from tests.slurm.conftest import sync_until

pytestmark = pytest.mark.slurm


def placed_and_dispatched(user: User, placement: dict[str, int], **fields: object) -> Job:
    """Submit and admit through the portal, then hand the backend the given placement (as a reservation plan would)."""
    raw = {"name": "pinned", "gpu_model": "a100", "gpus_per_node": 1, "walltime": 300, "command": ["sleep", "3"], **fields}
    job = job_services.submit(user, raw)[0]
    job_services.run_admission_cycle()
    Job.objects.filter(pk=job.pk).update(placement=placement)
    assert job_services.dispatch(job.pk), Job.objects.filter(pk=job.pk).values_list("state", "reason_detail").get()
    return job


@pytest.mark.parametrize(("pin", "expected"), [("all", "gpu-a100-2"), ("none", "gpu-a100-1")])
def test_a_job_runs_where_the_portal_placed_it_only_when_pinned(
    slurm_world: SlurmBackend, alice: User, settings: Settings, pin: str, expected: str
) -> None:
    settings.SLURM_PIN_NODES = pin
    job = placed_and_dispatched(alice, {"gpu-a100-2": 1})  # Slurm alone picks the first idle node, gpu-a100-1
    sync_until(job, {JobState.RUNNING, JobState.SUCCEEDED})
    assert job.placement == {expected: 1}
    sync_until(job, {JobState.SUCCEEDED})


def test_a_gang_lands_on_the_nodes_the_portal_reserved(slurm_world: SlurmBackend, alice: User, settings: Settings) -> None:
    settings.SLURM_PIN_NODES = "gangs"
    TeamQuota.objects.filter(team__slug="vision", gpu_model="a100").update(limit=16)
    call_command("sync_slurm", "--apply", stdout=StringIO())  # the account's GrpTRES follows the quota
    job = placed_and_dispatched(alice, {"gpu-a100-1": 8, "gpu-a100-2": 8}, gpus_per_node=8, nodes=2)
    sync_until(job, {JobState.RUNNING, JobState.SUCCEEDED})
    assert job.placement == {"gpu-a100-1": 8, "gpu-a100-2": 8}
    sync_until(job, {JobState.SUCCEEDED})
