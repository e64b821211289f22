"""Nothing lost, nothing twice: crashes between steps are repaired by reconciliation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings

from cluster.backends.base import BackendUnavailable, JobRequest, RemoteJob
from cluster.models import SimJob
from cluster.simulator.backend import SimulatorBackend
from jobs import services
from jobs.models import Job, JobEvent
from jobs.states import JobState
from portal.models import User
from portal.queue import after_commit


def admit(job: Job) -> Job:
    services.run_admission_cycle()
    job.refresh_from_db()
    assert job.state == JobState.ADMITTED
    return job


def test_a_crash_after_the_backend_submit_leaves_no_duplicate(
    alice: User, submit: Callable[..., Job], grid: SimulatorBackend
) -> None:
    job = admit(submit(alice))
    grid.submit(services.job_request(job))  # the worker died right after this call
    services.dispatch(job.pk)  # the task is delivered again
    assert SimJob.objects.filter(portal_job_id=job.pk).count() == 1
    job.refresh_from_db()
    assert job.state == JobState.DISPATCHED


def test_sync_adopts_a_job_the_backend_has_but_the_portal_never_recorded(
    alice: User, submit: Callable[..., Job], grid: SimulatorBackend
) -> None:
    job = admit(submit(alice))
    grid.submit(services.job_request(job))
    report = services.sync_jobs()
    job.refresh_from_db()
    assert report.recovered == 1
    assert job.state == JobState.RUNNING and job.backend_job_id
    assert JobEvent.objects.filter(job=job, to_state=JobState.DISPATCHED, reason__contains="portal id").exists()


def test_dispatching_twice_submits_once(alice: User, submit: Callable[..., Job]) -> None:
    job = admit(submit(alice))
    assert services.dispatch(job.pk)
    assert not services.dispatch(job.pk)
    assert SimJob.objects.filter(portal_job_id=job.pk).count() == 1


class DownBackend(SimulatorBackend):
    def list_jobs(self, portal_job_ids: list[int] | None = None) -> list[RemoteJob]:
        raise BackendUnavailable("controller not responding")


def test_an_unreachable_backend_leaves_the_job_admitted_for_a_retry(alice: User, submit: Callable[..., Job]) -> None:
    job = admit(submit(alice))
    with pytest.raises(BackendUnavailable) as caught:
        services.dispatch(job.pk, backend=DownBackend())
    assert caught.value.retryable
    job.refresh_from_db()
    assert job.state == JobState.ADMITTED


def test_the_reaper_redispatches_jobs_stuck_in_admitted(
    alice: User,
    submit: Callable[..., Job],
    settings: Settings,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    settings.DISPATCH_STALE_S = 5
    job = admit(submit(alice))
    Job.objects.filter(pk=job.pk).update(admitted_at=timezone.now() - timedelta(seconds=60))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.reap_stale()["redispatched"] == 1
    job.refresh_from_db()
    assert job.state == JobState.DISPATCHED


def test_a_job_the_backend_lost_is_requeued_not_forgotten(alice: User, submit: Callable[..., Job], settings: Settings) -> None:
    settings.DISPATCH_STALE_S = 5
    job = admit(submit(alice))
    services.dispatch(job.pk)
    SimJob.objects.filter(portal_job_id=job.pk).delete()
    Job.objects.filter(pk=job.pk).update(dispatched_at=timezone.now() - timedelta(seconds=60))
    assert services.sync_jobs().requeued == 1
    job.refresh_from_db()
    assert job.state == JobState.REQUEUED and job.placement == {} and job.backend_job_id == ""
    services.run_admission_cycle()
    job.refresh_from_db()
    assert job.state == JobState.ADMITTED


def test_a_job_cancelled_while_being_dispatched_is_stopped_on_the_backend(alice: User, submit: Callable[..., Job]) -> None:
    job = admit(submit(alice))

    class CancelDuringSubmit(SimulatorBackend):
        def submit(self, request: JobRequest) -> str:
            backend_id = super().submit(request)
            services.cancel(alice, Job.objects.get(pk=request.portal_job_id))
            return backend_id

    assert not services.dispatch(job.pk, backend=CancelDuringSubmit())
    assert SimJob.objects.get(portal_job_id=job.pk).state == "cancelled"
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED


def test_a_repeated_sync_changes_nothing(alice: User, submit: Callable[..., Job]) -> None:
    admit(submit(alice))
    services.dispatch(Job.objects.get().pk)
    services.sync_jobs()
    events = JobEvent.objects.count()
    services.sync_jobs()
    services.sync_jobs()
    assert JobEvent.objects.count() == events


def test_a_broker_outage_after_commit_is_logged_not_raised(
    alice: User,
    submit: Callable[..., Job],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class DownTask:
        name = "jobs.tasks.admission_cycle"

        def delay(self, *args: Any) -> None:
            raise ConnectionError("broker unreachable")

    with django_capture_on_commit_callbacks(execute=True):
        after_commit(DownTask())
    assert "enqueue jobs.tasks.admission_cycle" in caplog.text
