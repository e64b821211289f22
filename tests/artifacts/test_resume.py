"""Through the whole portal: a job dispatched with its locations checkpoints, is preempted mid-run, requeued,
dispatched again, and resumes from its last checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cluster.models import SimJob
from cluster.simulator.backend import SimulatorBackend
from jobs import services as job_services
from jobs.models import Job
from jobs.states import JobState
from portal.models import User
from tests.artifacts.conftest import Clock, saved

EVERY_S = 60


def state(job: Job) -> str:
    job.refresh_from_db()
    return job.state


def test_the_backend_receives_the_jobs_locations(file_store: Path, alice: User, submit: Callable[..., Job]) -> None:
    job = submit(alice, checkpoint_interval=EVERY_S, env={"MINE": "1"})
    env = job_services.job_request(Job.objects.select_related("team", "owner").get(pk=job.pk)).env
    assert env["MINE"] == "1"
    assert env["GRID_CHECKPOINT_DIR"] == str(file_store.resolve() / f"vision/{job.pk}/checkpoints")
    assert env["GRID_OUTPUT_DIR"] == str(file_store.resolve() / f"vision/{job.pk}/output")


def test_a_job_preempted_mid_run_resumes_from_its_last_checkpoint(
    file_store: Path, backend: SimulatorBackend, clock: Clock, alice: User, submit: Callable[..., Job]
) -> None:
    job = submit(alice, checkpoint_interval=EVERY_S, walltime=3600)
    assert job_services.admit_and_dispatch(backend) == [job.pk]
    job_services.sync_jobs(backend)
    assert state(job) == JobState.RUNNING
    total = SimJob.objects.get(portal_job_id=job.pk).work_total_s

    clock.tick(total / 2)
    assert job_services.transition(job.pk, JobState.PREEMPTING, why="reclaimed for a test")
    assert job_services.preempt_on_backend(job.pk, backend)
    last = (total / 2) // EVERY_S * EVERY_S
    assert saved(job, file_store) == pytest.approx(last) and last > 0
    job_services.sync_jobs(backend)
    assert state(job) == JobState.REQUEUED

    clock.tick(300)
    assert job_services.admit_and_dispatch(backend) == [job.pk]
    job_services.sync_jobs(backend)
    assert state(job) == JobState.RUNNING
    sim = SimJob.objects.get(portal_job_id=job.pk)
    assert sim.attempts == 2 and sim.work_done_s == pytest.approx(last)
    assert sim.runtime_s == pytest.approx(total - last)  # the second attempt is shorter by what the checkpoint saved

    clock.tick(total - last + 1)
    job_services.sync_jobs(backend)
    assert state(job) == JobState.SUCCEEDED


def test_a_job_whose_node_fails_mid_run_is_requeued_and_resumes(
    file_store: Path, backend: SimulatorBackend, clock: Clock, alice: User, submit: Callable[..., Job]
) -> None:
    job = submit(alice, checkpoint_interval=EVERY_S, walltime=3600)
    job_services.admit_and_dispatch(backend)
    job_services.sync_jobs(backend)
    sim = SimJob.objects.get(portal_job_id=job.pk)
    clock.tick(EVERY_S * 4 + 30)
    node = next(iter(sim.placement))
    backend.inject_fault(node, "down")
    job_services.sync_jobs(backend)
    assert state(job) == JobState.REQUEUED and saved(job, file_store) == EVERY_S * 4
    backend.clear_fault(node)

    assert job_services.admit_and_dispatch(backend) == [job.pk]
    sim.refresh_from_db()
    assert (sim.attempts, sim.work_done_s) == (2, EVERY_S * 4) and sim.runtime_s == pytest.approx(sim.work_total_s - EVERY_S * 4)
