"""Telemetry into the scheduler, through the whole portal: the idle guard marks a job reclaimable and
the next admission cycle takes its GPUs first; a site may count idle allocation against fair share."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings

from cluster.models import JobEfficiency, SafeguardEvent, SimJob
from cluster.simulator.backend import SimulatorBackend
from grid import telemetry
from jobs import services
from jobs.models import Job, JobEvent
from jobs.states import JobState
from portal.models import Team, User
from quotas import services as quota_services
from quotas.models import TeamQuota


@pytest.fixture(autouse=True)
def idle_settings(settings: Settings) -> None:
    settings.GUARD_HOT_WINDOW_S = 0
    settings.GUARD_DRAIN = False
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.IDLE_WARN_AFTER_S = 0
    settings.IDLE_ACT_AFTER_S = 10
    settings.IDLE_TEAM_ACTIONS = "render=reclaimable"


def start(jobs: list[Job], loads: list[float]) -> None:
    """Run the jobs on the simulated grid at known GPU loads, started an hour ago (past the victims' minimum runtime)."""
    services.run_admission_cycle()
    for job in jobs:
        services.dispatch(job.pk)
    services.sync_jobs()
    for job, load in zip(jobs, loads, strict=True):
        SimJob.objects.filter(portal_job_id=job.pk).update(load=load)
    Job.objects.filter(pk__in=[j.pk for j in jobs]).update(started_at=timezone.now() - timedelta(hours=1))
    assert {j.state for j in Job.objects.filter(pk__in=[j.pk for j in jobs])} == {JobState.RUNNING}


def test_the_idle_guard_marks_a_job_and_admission_reclaims_it_first(
    grid: SimulatorBackend,
    alice: User,
    carol: User,
    render: Team,
    submit: Callable[..., Job],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    TeamQuota.objects.create(team=render, gpu_model="a100", guarantee=16, limit=16)  # render borrows nothing
    TeamQuota.objects.filter(team__slug="vision", gpu_model="a100").update(guarantee=8, limit=12)
    working, idle = (submit(carol, name=n, gpus_per_node=8, priority="preemptible") for n in ("working", "idle"))
    start([working, idle], [0.9, 0.0])

    mine = submit(alice, name="mine", gpus_per_node=8)
    assert services.run_admission_cycle() == []
    assert not Job.objects.filter(state=JobState.PREEMPTING).exists()  # render is within its guarantee: no victim yet

    t0 = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        telemetry.run_cycle(now=t0)
        telemetry.run_cycle(now=t0 + timedelta(seconds=20))
    assert JobEfficiency.objects.get(portal_job_id=idle.pk).idle_decision == "reclaimable"
    assert JobEfficiency.objects.get(portal_job_id=working.pk).idle_decision == ""
    assert SafeguardEvent.objects.filter(portal_job_id=idle.pk, kind="idle_reclaimable").exists()

    with django_capture_on_commit_callbacks(execute=True):
        assert services.run_admission_cycle() == []
    idle.refresh_from_db()
    assert idle.state == JobState.PREEMPTING
    event = JobEvent.objects.get(job=idle, to_state=JobState.PREEMPTING)
    assert "idle" in event.reason and f"#{mine.pk}" in event.reason
    assert Job.objects.get(pk=working.pk).state == JobState.RUNNING

    services.sync_jobs()
    assert Job.objects.get(pk=idle.pk).state == JobState.REQUEUED
    assert mine.pk in services.run_admission_cycle()


def finished_with_idle_share(job: Job, idle_share: float) -> None:
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(
        state=JobState.SUCCEEDED, started_at=now - timedelta(hours=2), finished_at=now - timedelta(hours=1), placement={}
    )
    JobEfficiency.objects.create(portal_job_id=job.pk, samples=1000, idle_samples=int(1000 * idle_share), final=True)


@pytest.mark.parametrize(("weight", "first"), [(0.0, "vision"), (1.0, "render")])
def test_a_team_whose_gpus_sat_idle_ranks_behind_when_the_site_opts_in(
    grid: SimulatorBackend,
    alice: User,
    carol: User,
    render: Team,
    submit: Callable[..., Job],
    settings: Settings,
    weight: float,
    first: str,
) -> None:
    settings.FAIRSHARE_IDLE_WEIGHT = weight
    TeamQuota.objects.create(team=render, gpu_model="a100", guarantee=0, limit=16)
    TeamQuota.objects.filter(team__slug="vision", gpu_model="a100").update(guarantee=0, limit=16)
    finished_with_idle_share(submit(alice, name="earlier"), 0.8)
    finished_with_idle_share(submit(carol, name="earlier"), 0.0)
    quota_services.store_usage({"vision": 50_000.0, "render": 50_000.0}, timezone.now())

    vision_job = submit(alice, name="v", gpus_per_node=8, nodes=2)  # older: wins a tie
    render_job = submit(carol, name="r", gpus_per_node=8, nodes=2)
    admitted = services.run_admission_cycle()
    assert admitted == [vision_job.pk if first == "vision" else render_job.pk]
    stored = quota_services.usage_history()
    assert stored["vision"][0] == pytest.approx(stored["render"][0])  # the penalty ranks; it is never stored
