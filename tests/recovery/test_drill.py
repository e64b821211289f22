"""The checkpoint recovery drill, through the whole portal on the simulated grid with the directory store
and a replica on moto's S3 server: a job checkpoints, the nightly run replicates its checkpoints, the job
goes on, then its node fails and the store loses the checkpoints; the operator restores the job from last
night's replica in the console, and the job resumes from that checkpoint and completes."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from cluster.models import SimJob
from cluster.simulator.backend import SimulatorBackend
from jobs import services as job_services
from jobs.models import Job
from jobs.states import JobState
from portal.models import User
from recovery import services
from recovery.models import Snapshot, SnapshotKind, SnapshotState
from tests.artifacts.conftest import Clock, saved

EVERY_S = 60


def state(job: Job) -> str:
    job.refresh_from_db()
    return job.state


def test_a_job_restored_from_last_nights_replica_resumes_from_that_checkpoint(
    file_store: Path,
    replica: Any,
    backend: SimulatorBackend,
    clock: Clock,
    alice: User,
    olivia: User,
    submit: Callable[..., Job],
    web: Callable[[User | None], Client],
) -> None:
    job = submit(alice, checkpoint_interval=EVERY_S, walltime=3600)
    assert job_services.admit_and_dispatch(backend) == [job.pk]
    job_services.sync_jobs(backend)
    assert state(job) == JobState.RUNNING
    total = SimJob.objects.get(portal_job_id=job.pk).work_total_s  # at least 1,260 s of work

    clock.tick(5 * EVERY_S + 10)
    job_services.sync_jobs(backend)
    assert saved(job, file_store) == 5 * EVERY_S
    services.nightly(now=clock.now)  # the night: step 300 goes to the replica
    snapshot = Snapshot.objects.get()
    assert (snapshot.kind, snapshot.state, snapshot.job_ids) == (SnapshotKind.REPLICA, SnapshotState.READY, [job.pk])

    clock.tick(4 * EVERY_S)  # the next day the job goes on to step 540
    job_services.sync_jobs(backend)
    assert saved(job, file_store) == 9 * EVERY_S
    node = next(iter(SimJob.objects.get(portal_job_id=job.pk).placement))
    backend.inject_fault(node, "down")  # the disaster: the node goes, and with it the store's copy
    job_services.sync_jobs(backend)
    assert state(job) == JobState.REQUEUED
    shutil.rmtree(file_store / f"vision/{job.pk}/checkpoints")
    backend.clear_fault(node)

    answer = web(olivia).post(f"/console/recovery/{snapshot.pk}/restore/", {"job": job.pk}, follow=True)
    assert f"Job #{job.pk}: checkpoints restored from snapshot #{snapshot.pk}" in answer.content.decode()
    assert saved(job, file_store) == 5 * EVERY_S and state(job) == JobState.PENDING

    clock.tick(60)
    assert job_services.admit_and_dispatch(backend) == [job.pk]
    job_services.sync_jobs(backend)
    assert state(job) == JobState.RUNNING
    sim = SimJob.objects.get(portal_job_id=job.pk)
    assert sim.attempts == 2 and sim.work_done_s == 5 * EVERY_S  # resumed from last night's step 300
    assert sim.runtime_s == pytest.approx(total - 5 * EVERY_S)

    clock.tick(total - 5 * EVERY_S + 1)
    job_services.sync_jobs(backend)
    assert state(job) == JobState.SUCCEEDED
