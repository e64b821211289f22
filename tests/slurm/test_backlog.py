"""The backlog: admitted jobs Slurm holds queued beyond the free GPUs and starts itself as GPUs free.

The a100 partition (2 nodes x 8 GPUs) is filled with the portal's own jobs first; what the next
admission cycle admits then waits in Slurm, counted against its team's quota, in the portal's order.
"""

from __future__ import annotations

import io
import subprocess

import pytest
from django.core.management import call_command
from pytest_django import Settings

from cluster.backends.base import RemoteJobState
from cluster.backends.slurm import SlurmBackend
from jobs import services as job_services
from jobs.models import Job
from jobs.states import HOLDS_GPUS, JobState
from portal.models import Team, User
from quotas.models import TeamQuota
from tests.slurm.conftest import sync_until, wait_for

pytestmark = pytest.mark.slurm


def submit(user: User, gpus: int = 1, seconds: int = 120) -> Job:
    raw = {"name": "b", "gpu_model": "a100", "gpus_per_node": gpus, "walltime": 300, "command": ["sleep", str(seconds)]}
    return job_services.submit(user, raw)[0]


def slurm_state(backend: SlurmBackend, job: Job) -> str:
    job.refresh_from_db()
    return backend.job_state(job.backend_job_id)[0] if job.backend_job_id else ""


def slurm_jobs_named(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-t", "all", "--name", name, "-o", "%i"], capture_output=True, text=True, check=True)
    return out.stdout.split()


def fill_a100(backend: SlurmBackend, user: User, seconds: tuple[int, int] = (120, 120)) -> list[Job]:
    """Both a100 nodes busy with one 8-GPU job each, running on Slurm."""
    fill = [submit(user, gpus=8, seconds=s) for s in seconds]
    assert job_services.admit_and_dispatch(backend)[:2] == [j.pk for j in fill]
    for job in fill:
        sync_until(job, {JobState.RUNNING})
    return fill


@pytest.fixture
def backlog(slurm_world: SlurmBackend, settings: Settings) -> SlurmBackend:
    settings.SLURM_BACKLOG = 64
    return slurm_world


def held_gpus(team: Team, model: str = "a100") -> int:
    return sum(Job.objects.filter(team=team, gpu_model=model, state__in=HOLDS_GPUS).values_list("gpus", flat=True))


def test_backlog_jobs_wait_in_slurm_and_count_against_the_quota(backlog: SlurmBackend, alice: User, vision: Team) -> None:
    TeamQuota.objects.filter(team=vision, gpu_model="a100").update(guarantee=16, limit=20)
    call_command("sync_slurm", "--apply", stdout=io.StringIO())
    fill_a100(backlog, alice)
    extra = [submit(alice) for _ in range(6)]
    admitted = job_services.admit_and_dispatch(backlog)
    assert admitted == [j.pk for j in extra[:4]]  # 16 running + 4 queued = the limit of 20
    for job in extra[:4]:
        assert slurm_state(backlog, job) == "PENDING" and job.state == JobState.DISPATCHED
    for job in extra[4:]:
        job.refresh_from_db()
        assert job.state == JobState.PENDING and job.reason == "quota", job.reason_detail
    assert held_gpus(vision) == 20
    assert job_services.admit_and_dispatch(backlog) == []  # nothing more while the backlog stands


def test_a_cancelled_backlog_job_leaves_slurm(backlog: SlurmBackend, alice: User, vision: Team) -> None:
    TeamQuota.objects.filter(team=vision, gpu_model="a100").update(guarantee=16, limit=18)
    call_command("sync_slurm", "--apply", stdout=io.StringIO())
    fill_a100(backlog, alice)
    queued = submit(alice)
    assert job_services.admit_and_dispatch(backlog) == [queued.pk]
    assert slurm_state(backlog, queued) == "PENDING"
    job_services.cancel(alice, queued)
    job_services.cancel_on_backend(queued.pk, backlog)
    assert slurm_state(backlog, queued) == "CANCELLED"
    found = backlog.find_job(queued.pk)
    assert found is None or found.state == RemoteJobState.CANCELLED
    job_services.sync_jobs(backlog)
    queued.refresh_from_db()
    assert queued.state == JobState.CANCELLED
    assert held_gpus(vision) == 16


def test_a_crash_between_submit_and_record_of_a_backlog_job_leaves_one_slurm_job(
    backlog: SlurmBackend, alice: User, vision: Team
) -> None:
    TeamQuota.objects.filter(team=vision, gpu_model="a100").update(guarantee=16, limit=18)
    call_command("sync_slurm", "--apply", stdout=io.StringIO())
    fill_a100(backlog, alice)
    queued = [submit(alice), submit(alice)]
    admitted = job_services.run_admission_cycle(backlog)
    assert admitted == [j.pk for j in queued]
    first = queued[0]
    first.refresh_from_db()
    slurm_id = backlog.submit(job_services.job_request(first))  # the worker died right after this
    assert job_services.dispatch_many(admitted, backlog) == admitted  # delivered again after the restart
    first.refresh_from_db()
    assert first.backend_job_id == slurm_id
    assert slurm_jobs_named(f"{backlog.config.job_prefix}-{first.pk}") == [slurm_id]
    assert len(slurm_jobs_named(f"{backlog.config.job_prefix}-{queued[1].pk}")) == 1
    # A sync that finds the job before dispatch runs again records it as dispatched, once.
    assert job_services.sync_jobs(backlog).recovered == 0


def test_slurm_starts_the_backlog_in_the_portals_fair_share_order(
    backlog: SlurmBackend, alice: User, carol: User, vision: Team, render: Team
) -> None:
    TeamQuota.objects.filter(team=vision, gpu_model="a100").update(guarantee=16, limit=24)
    TeamQuota.objects.create(team=render, gpu_model="a100", guarantee=8, limit=8)
    call_command("sync_slurm", "--apply", stdout=io.StringIO())
    short, _ = fill_a100(backlog, alice, seconds=(4, 120))
    older = submit(alice, gpus=8, seconds=60)  # vision holds 16 GPUs: behind render in fair share
    newer = submit(carol, gpus=8, seconds=60)
    assert job_services.admit_and_dispatch(backlog) == [newer.pk, older.pk]
    assert slurm_state(backlog, newer) == slurm_state(backlog, older) == "PENDING"
    sync_until(short, {JobState.SUCCEEDED})
    wait_for(lambda: slurm_state(backlog, newer) == "RUNNING", 20, "render's job to start on the freed node")
    assert slurm_state(backlog, older) == "PENDING"  # vision's older job waits: the portal's order, not age
    sync_until(newer, {JobState.RUNNING})
    newer.refresh_from_db()
    assert newer.placement == {_node_of(short): 8}  # the ledger follows Slurm's choice of node
    assert held_gpus(render) == 8 and held_gpus(vision) == 16  # the long fill job and the queued one


def _node_of(job: Job) -> str:
    job.refresh_from_db()
    return str(next(iter(job.placement)))
