"""Checkpoints are what a stopped job resumes from: the simulated workload writes one every N seconds of work into
its checkpoint location, and its next attempt after preemption only has the rest of its work to do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from artifacts import services
from cluster.backends.base import JobRequest, RemoteJobState
from cluster.models import SimJob
from cluster.simulator.backend import CHECKPOINT_FILE, SimulatorBackend
from cluster.simulator.model import checkpoint_progress, resumed_work
from jobs.models import Job
from portal.models import User
from tests.artifacts.conftest import Clock, saved

EVERY_S = 60


def request_for(job: Job) -> JobRequest:
    return JobRequest(
        portal_job_id=job.pk, name=job.name, kind="training", team=job.team.slug, user="alice", gpu_model="a100",
        gpus_per_node=1, nodes=1, node_names=(), walltime_s=job.walltime_s, image="img", command=("python", "train.py"),
        env=services.job_environment(job),
    )  # fmt: skip


def test_the_last_checkpoint_is_the_last_whole_interval_of_work() -> None:
    assert checkpoint_progress(0, 59, 60, 1000) == 0
    assert checkpoint_progress(0, 61, 60, 1000) == 60
    assert checkpoint_progress(120, 130, 60, 1000) == 240  # an attempt resumed from 120 s of work
    assert checkpoint_progress(0, 5000, 60, 1000) == 1000  # done: its last checkpoint is the finished work
    assert checkpoint_progress(120, 500, 0, 1000) == 120  # no checkpointing: only what it resumed from
    assert resumed_work(1000, 240) == 240 and resumed_work(1000, None) == 0 and resumed_work(1000, 5000) == 0


def test_a_preempted_job_resumes_from_its_last_checkpoint(
    file_store: Path, backend: SimulatorBackend, clock: Clock, alice: User, submit: Callable[..., Job]
) -> None:
    job = submit(alice, checkpoint_interval=EVERY_S, walltime=3600)
    request = request_for(job)
    assert request.env["GRID_CHECKPOINT_INTERVAL_S"] == str(EVERY_S)
    backend_id = backend.submit(request)
    sim = SimJob.objects.get(pk=backend_id)
    total = sim.work_total_s
    assert sim.state == RemoteJobState.RUNNING and sim.runtime_s == pytest.approx(total)

    clock.tick(total / 2)
    backend.advance()  # the job has been writing checkpoints while it ran
    halfway = (total / 2) // EVERY_S * EVERY_S
    assert saved(job, file_store) == pytest.approx(halfway)

    clock.tick(EVERY_S * 1.5)  # killed between two checkpoints: the work since the last one is lost
    backend.preempt(backend_id, grace_s=0)
    last = (total / 2 + EVERY_S * 1.5) // EVERY_S * EVERY_S
    assert saved(job, file_store) == pytest.approx(last) and last > halfway
    assert backend.find_job(job.pk).state == RemoteJobState.PREEMPTED  # type: ignore[union-attr]
    assert "checkpoints/" + CHECKPOINT_FILE in [f.path for f in services.list_files(job)]  # on the job's page too

    clock.tick(600)  # requeued, and submitted again later
    assert backend.submit(request) == backend_id
    sim.refresh_from_db()
    assert (sim.state, sim.attempts) == ("running", 2) and sim.work_done_s == pytest.approx(last)
    assert sim.runtime_s == pytest.approx(total - last)  # only the rest of its work remains

    clock.tick(total - last - 1)
    assert backend.find_job(job.pk).state == RemoteJobState.RUNNING  # type: ignore[union-attr]
    clock.tick(2)
    assert backend.find_job(job.pk).state == RemoteJobState.SUCCEEDED  # type: ignore[union-attr]
    assert saved(job, file_store) == pytest.approx(total)


def test_a_job_killed_by_a_node_failure_resumes_from_its_checkpoints(
    file_store: Path, backend: SimulatorBackend, clock: Clock, alice: User, submit: Callable[..., Job]
) -> None:
    job = submit(alice, checkpoint_interval=EVERY_S, walltime=3600)
    backend_id = backend.submit(request_for(job))
    node = next(iter(SimJob.objects.get(pk=backend_id).placement))
    clock.tick(EVERY_S * 3 + 10)
    backend.inject_fault(node, "down")
    lost = backend.find_job(job.pk)
    assert lost is not None and (lost.state, lost.reason) == (RemoteJobState.PREEMPTED, "NodeFail")  # the portal requeues it
    assert saved(job, file_store) == EVERY_S * 3
    backend.clear_fault(node)
    backend.submit(request_for(job))
    sim = SimJob.objects.get(pk=backend_id)
    assert (sim.state, sim.work_done_s) == ("running", EVERY_S * 3) and sim.runtime_s == pytest.approx(
        sim.work_total_s - EVERY_S * 3
    )


def test_a_job_without_checkpoints_fails_with_its_node_as_before(
    backend: SimulatorBackend, clock: Clock, alice: User, submit: Callable[..., Job]
) -> None:
    job = submit(alice, walltime=3600)
    backend_id = backend.submit(request_for(job))
    clock.tick(100)
    backend.inject_fault(next(iter(SimJob.objects.get(pk=backend_id).placement)), "down")
    lost = backend.find_job(job.pk)
    assert lost is not None and (lost.state, lost.reason) == (RemoteJobState.FAILED, "NodeFail")


def test_without_a_checkpoint_location_a_preempted_job_starts_over(
    backend: SimulatorBackend, clock: Clock, alice: User, submit: Callable[..., Job]
) -> None:
    job = submit(alice, walltime=3600)
    request = request_for(job)
    assert request.env == {}  # no store configured
    backend_id = backend.submit(request)
    total = SimJob.objects.get(pk=backend_id).work_total_s
    clock.tick(total / 2)
    backend.preempt(backend_id, grace_s=0)
    backend.submit(request)
    assert SimJob.objects.get(pk=backend_id).runtime_s == pytest.approx(total)
