"""A job's path through the portal on the simulated grid: submit, admit, dispatch, run, finish."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings

from cluster.models import SimJob
from jobs import services
from jobs.models import Job, JobEvent
from jobs.states import JobState
from portal.models import User


def run_cycle() -> None:
    services.run_admission_cycle()
    for job_id in Job.objects.filter(state=JobState.ADMITTED).values_list("id", flat=True):
        services.dispatch(job_id)
    services.sync_jobs()


def finish_all_sim_jobs() -> None:
    """Move the simulated clock past every running job's end."""
    SimJob.objects.filter(state="running").update(ends_at=timezone.now() - timedelta(seconds=1))


def test_it_runs_a_job_from_pending_to_succeeded(alice: User, submit: Callable[..., Job]) -> None:
    job = submit(alice, name="resnet")
    assert job.state == JobState.PENDING

    run_cycle()
    job.refresh_from_db()
    assert job.state == JobState.RUNNING
    assert job.backend == "simulator" and job.backend_job_id
    assert sum(job.placement.values()) == 1

    finish_all_sim_jobs()
    services.sync_jobs()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED
    assert job.exit_code == 0
    states = list(JobEvent.objects.filter(job=job).values_list("to_state", flat=True))
    assert states == ["pending", "admitted", "dispatched", "running", "succeeded"]


def test_it_records_who_and_why_on_every_transition(alice: User, submit: Callable[..., Job]) -> None:
    job = submit(alice)
    run_cycle()
    first, *rest = JobEvent.objects.filter(job=job)
    assert first.actor == "alice" and first.reason == "submitted"
    assert all(e.actor == "system" for e in rest)
    assert rest[0].from_state == "pending" and rest[0].to_state == "admitted"


def test_a_failed_job_keeps_its_exit_code_and_reason(alice: User, submit: Callable[..., Job], settings: Settings) -> None:
    job = submit(alice)
    run_cycle()
    SimJob.objects.filter(portal_job_id=job.pk).update(
        outcome_state="failed", outcome_exit_code=137, outcome_reason="OutOfMemory"
    )
    finish_all_sim_jobs()
    services.sync_jobs()
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert job.exit_code == 137
    assert "OutOfMemory" in job.reason_detail


@pytest.mark.parametrize("state", [JobState.PENDING, JobState.RUNNING])
def test_cancel_stops_the_job_on_the_backend(
    alice: User, submit: Callable[..., Job], state: JobState, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    job = submit(alice)
    if state == JobState.RUNNING:
        run_cycle()
    with django_capture_on_commit_callbacks(execute=True):
        services.cancel(alice, Job.objects.get(pk=job.pk))
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
    sim = SimJob.objects.filter(portal_job_id=job.pk).first()
    assert sim is None if state == JobState.PENDING else (sim is not None and sim.state == "cancelled")


def test_a_transition_the_table_forbids_does_not_happen(alice: User, submit: Callable[..., Job]) -> None:
    job = submit(alice)
    assert not services.transition(job.pk, JobState.SUCCEEDED)
    job.refresh_from_db()
    assert job.state == JobState.PENDING
    assert JobEvent.objects.filter(job=job).count() == 1
