"""Crashes and outages: no duplicate after a crash mid-submit; the portal catches up after slurmctld returns."""

from __future__ import annotations

import subprocess

import pytest

from cluster.backends.base import BackendUnavailable
from cluster.backends.slurm import SlurmBackend
from grid import health
from jobs import services as job_services
from jobs.states import JobState
from portal.models import User
from tests.slurm.conftest import cluster_script, portal_job, sync_until, wait_for

pytestmark = pytest.mark.slurm


def slurm_jobs_named(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-t", "all", "--name", name, "-o", "%i"], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_a_restart_between_submit_and_record_leaves_one_slurm_job(slurm_world: SlurmBackend, alice: User) -> None:
    job = job_services.submit(
        alice, {"name": "x", "gpu_model": "a100", "gpus_per_node": 1, "walltime": 300, "command": ["sleep", "2"]}
    )[0]
    job_services.run_admission_cycle()
    job.refresh_from_db()
    first = slurm_world.submit(job_services.job_request(job))  # the worker died right after this
    job_services.dispatch(job.pk)  # the task is delivered again after the restart
    job.refresh_from_db()
    assert job.state == JobState.DISPATCHED and job.backend_job_id == first
    assert slurm_jobs_named(f"{slurm_world.config.job_prefix}-{job.pk}") == [first]
    sync_until(job, {JobState.SUCCEEDED})


def test_the_portal_catches_up_after_slurmctld_comes_back(slurm_world: SlurmBackend, alice: User) -> None:
    running = portal_job(alice, command=["sleep", "6"])
    sync_until(running, {JobState.RUNNING})
    assert cluster_script("ctld-stop").returncode == 0
    try:
        with pytest.raises(BackendUnavailable):
            job_services.sync_jobs()
        assert health.run_checks()["checks"]["backend"]["ok"] is False  # degraded, and the portal still answers
        waiting = job_services.submit(
            alice, {"name": "y", "gpu_model": "a100", "gpus_per_node": 1, "walltime": 300, "command": ["true"]}
        )[0]
        job_services.run_admission_cycle()
        with pytest.raises(BackendUnavailable):
            job_services.dispatch(waiting.pk)  # retryable: the task would back off and retry
        waiting.refresh_from_db()
        assert waiting.state == JobState.ADMITTED
    finally:
        assert cluster_script("ctld-start").returncode == 0
    wait_for(lambda: _dispatched(waiting.pk), 30, "dispatch after slurmctld returned")
    waiting.refresh_from_db()
    sync_until(waiting, {JobState.SUCCEEDED}, timeout=40)
    sync_until(running, {JobState.SUCCEEDED}, timeout=40)


def _dispatched(job_id: int) -> bool:
    try:
        return job_services.dispatch(job_id)
    except BackendUnavailable:
        return False
