"""Reclaim through the whole portal: a team gets its guarantee back by preempting a borrower,
who is requeued and resumes later; nothing is preempted twice for the same demand."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks

from cluster.models import SimJob
from jobs import services
from jobs.models import Job, JobEvent
from jobs.states import JobState
from portal.models import Team, User
from quotas.models import TeamQuota


def run(job_ids: list[int]) -> None:
    for job_id in job_ids:
        services.dispatch(job_id)
    services.sync_jobs()


def test_a_team_reclaims_its_guarantee_from_a_preemptible_borrower(
    alice: User,
    carol: User,
    render: Team,
    submit: Callable[..., Job],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    TeamQuota.objects.create(team=render, gpu_model="a100", guarantee=0, limit=16)
    TeamQuota.objects.filter(team__slug="vision", gpu_model="a100").update(guarantee=8, limit=12)
    borrowers = [
        submit(carol, name=f"borrow-{i}", gpus_per_node=8, priority="preemptible", checkpoint_interval=600) for i in range(2)
    ]
    run(services.run_admission_cycle())
    assert {j.state for j in Job.objects.filter(pk__in=[b.pk for b in borrowers])} == {JobState.RUNNING}
    long_ago = timezone.now() - timedelta(hours=1)
    Job.objects.filter(pk__in=[b.pk for b in borrowers]).update(started_at=long_ago)

    mine = submit(alice, name="mine", gpus_per_node=8)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.run_admission_cycle() == []
    preempting = Job.objects.filter(state=JobState.PREEMPTING)
    assert preempting.count() == 1
    victim = preempting.get()
    assert victim.team.slug == "render"
    assert JobEvent.objects.filter(job=victim, to_state=JobState.PREEMPTING, reason__contains=f"#{mine.pk}").exists()
    assert SimJob.objects.get(portal_job_id=victim.pk).state == "preempted"  # its next submit resumes it

    assert services.run_admission_cycle() == []  # the victim still holds its GPUs: no second victim
    assert Job.objects.filter(state=JobState.PREEMPTING).count() == 1

    services.sync_jobs()
    victim.refresh_from_db()
    assert victim.state == JobState.REQUEUED and victim.placement == {}
    admitted = services.run_admission_cycle()
    assert mine.pk in admitted
    other = next(b for b in borrowers if b.pk != victim.pk)
    assert Job.objects.get(pk=other.pk).state == JobState.RUNNING


def test_critical_jobs_are_never_preempted(alice: User, carol: User, render: Team, submit: Callable[..., Job]) -> None:
    TeamQuota.objects.create(team=render, gpu_model="a100", guarantee=16, limit=16)
    TeamQuota.objects.filter(team__slug="vision", gpu_model="a100").update(guarantee=8, limit=12)
    for i in range(2):
        submit(carol, name=f"crit-{i}", gpus_per_node=8, priority="critical")
    run(services.run_admission_cycle())
    Job.objects.filter(state=JobState.RUNNING).update(started_at=timezone.now() - timedelta(hours=1))
    mine = submit(alice, name="mine", gpus_per_node=8)
    services.run_admission_cycle()
    mine.refresh_from_db()
    assert mine.state == JobState.PENDING and mine.reason in {"capacity", "quota"}
    assert not Job.objects.filter(state=JobState.PREEMPTING).exists()


def test_a_waiting_job_carries_its_reason_positions_and_estimated_start(alice: User, submit: Callable[..., Job]) -> None:
    first = submit(alice, name="first", gpus_per_node=8)
    second = submit(alice, name="second", gpus_per_node=8)
    third = submit(alice, name="third", gpus_per_node=6)
    run(services.run_admission_cycle())
    first.refresh_from_db()
    second.refresh_from_db()
    third.refresh_from_db()
    assert first.state == JobState.RUNNING
    assert second.state == JobState.PENDING and second.reason == "quota" and second.team_position == 1
    assert third.team_position == 2
    assert first.started_at is not None
    assert second.estimated_start is not None and second.estimated_start >= first.started_at
