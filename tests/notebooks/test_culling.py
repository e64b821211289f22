"""Idle culling: kernel AND GPUs idle, a warning first, a maximum lifetime, GPUs free at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from pytest_django import Settings

from billing.models import Notification
from cluster.models import JobEfficiency
from cluster.simulator.backend import SimulatorBackend
from jobs.models import Job
from jobs.states import HOLDS_GPUS, JobState
from notebooks import culling, services
from notebooks.culling import Action, Facts, Policy
from notebooks.models import Notebook
from notebooks.states import EndReason, NotebookState
from notebooks.tasks import cull_notebooks
from portal.models import User
from tests.notebooks.conftest import notebook_request, run_jobs

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
POLICY = Policy(idle_s=3600, warn_s=600)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def facts(
    now: float, *, kernel: float | None = 0, gpu_idle: float | None = 0, warned: float | None = None, life_h: float = 8
) -> Facts:
    return Facts(
        now=at(now), started_at=T0, lifetime_s=life_h * 3600, kernel_active_at=None if kernel is None else at(kernel),
        gpu_idle_since=None if gpu_idle is None else at(gpu_idle), warned_at=None if warned is None else at(warned),
    )  # fmt: skip


# --- the pure rule ---------------------------------------------------------------------------


def test_it_keeps_a_notebook_whose_kernel_was_used_lately() -> None:
    assert culling.decide(facts(55, kernel=50), POLICY).action == Action.KEEP


def test_it_warns_before_culling_an_idle_one_and_culls_after_the_warning() -> None:
    warn = culling.decide(facts(51), POLICY)
    assert (warn.action, warn.why, warn.cull_at) == (Action.WARN, "idle", at(61))
    assert culling.decide(facts(58, warned=51), POLICY).action == Action.KEEP
    assert culling.decide(facts(61, warned=51), POLICY).action == Action.CULL


def test_busy_gpus_keep_a_notebook_with_a_quiet_kernel_alive() -> None:
    assert culling.decide(facts(300, kernel=0, gpu_idle=None), POLICY).action == Action.KEEP


def test_idle_means_both_idle_counted_from_the_later_of_the_two() -> None:
    assert culling.idle_since(facts(100, kernel=10, gpu_idle=40)) == at(40)
    assert culling.decide(facts(85, kernel=10, gpu_idle=40), POLICY).action == Action.KEEP
    assert culling.decide(facts(85, kernel=10, gpu_idle=40), POLICY).cull_at == at(100)


def test_a_notebook_found_past_its_time_unwarned_still_gets_the_whole_warning() -> None:
    late = culling.decide(facts(500), POLICY)
    assert late.action == Action.WARN and late.cull_at == at(510)
    assert culling.decide(facts(505, warned=500), POLICY).action == Action.KEEP


def test_the_lifetime_ends_even_a_busy_notebook_after_a_warning() -> None:
    assert culling.decide(facts(60 * 8 - 10, kernel=470, gpu_idle=None), POLICY).action == Action.WARN
    assert culling.decide(facts(60 * 8, kernel=479, gpu_idle=None, warned=470), POLICY).action == Action.CULL


def test_a_warned_notebook_used_again_is_unwarned() -> None:
    decision = culling.decide(facts(70, kernel=65, warned=51), POLICY)
    assert decision.action == Action.UNWARN


# --- the service and the beat task -----------------------------------------------------------


@pytest.fixture
def ready(grid: SimulatorBackend, alice: User) -> Notebook:
    """A notebook whose job runs and whose server (nothing listens at port 9) was ready an hour ago."""
    notebook = services.start(alice, notebook_request(lifetime_s=8 * 3600))
    run_jobs()
    hour_ago = timezone.now() - timedelta(hours=1, minutes=1)
    Notebook.objects.filter(pk=notebook.pk).update(
        state=NotebookState.READY, server_url="http://127.0.0.1:9", ready_at=hour_ago, last_activity=hour_ago
    )
    notebook.refresh_from_db()
    assert notebook.job.state == JobState.RUNNING
    return notebook


@pytest.fixture(autouse=True)
def short_warning(settings: Settings) -> None:
    settings.NOTEBOOK_IDLE_S = 3600
    settings.NOTEBOOK_WARN_S = 60


def test_the_cycle_warns_the_owner_then_culls_and_frees_the_gpus_at_once(ready: Notebook, alice: User) -> None:
    JobEfficiency.objects.create(portal_job_id=ready.job_id, idle_since=ready.ready_at)
    assert cull_notebooks() == {"refreshed": 1, "warned": 1, "culled": 0}
    ready.refresh_from_db()
    assert ready.state == NotebookState.WARNED and ready.warned_at is not None
    note = Notification.objects.get(recipient=alice)
    assert f"#{ready.pk}" in note.subject and "idle" in note.body

    Notebook.objects.filter(pk=ready.pk).update(warned_at=timezone.now() - timedelta(minutes=2))
    assert cull_notebooks()["culled"] == 1
    ready.refresh_from_db()
    job = Job.objects.get(pk=ready.job_id)
    assert (ready.state, ready.end_reason) == (NotebookState.ENDED, EndReason.IDLE)
    assert job.state == JobState.CANCELLED and job.state not in HOLDS_GPUS
    last = job.events.last()
    assert last is not None and "culled: idle" in last.reason


def test_busy_gpus_keep_an_idle_kernels_notebook(ready: Notebook) -> None:
    JobEfficiency.objects.create(portal_job_id=ready.job_id, idle_since=None, samples=10, utilization_sum=900)
    assert cull_notebooks() == {"refreshed": 1, "warned": 0, "culled": 0}
    ready.refresh_from_db()
    assert ready.state == NotebookState.READY


def test_activity_after_the_warning_withdraws_it(ready: Notebook) -> None:
    JobEfficiency.objects.create(portal_job_id=ready.job_id, idle_since=ready.ready_at)
    cull_notebooks()
    Notebook.objects.filter(pk=ready.pk).update(last_activity=timezone.now())
    JobEfficiency.objects.filter(portal_job_id=ready.job_id).update(idle_since=None)
    cull_notebooks()
    ready.refresh_from_db()
    assert ready.state == NotebookState.READY and ready.warned_at is None


def test_the_maximum_lifetime_culls_a_busy_notebook(ready: Notebook) -> None:
    JobEfficiency.objects.create(portal_job_id=ready.job_id, idle_since=None)
    started = timezone.now() - timedelta(seconds=ready.lifetime_s)
    Notebook.objects.filter(pk=ready.pk).update(ready_at=started, last_activity=timezone.now())
    assert cull_notebooks()["warned"] == 1
    Notebook.objects.filter(pk=ready.pk).update(warned_at=timezone.now() - timedelta(minutes=2))
    assert cull_notebooks()["culled"] == 1
    ready.refresh_from_db()
    assert ready.end_reason == EndReason.LIFETIME


def test_the_beat_runs_the_cull_loop() -> None:
    from django.conf import settings

    assert settings.CELERY_BEAT_SCHEDULE["notebook-cull"]["task"] == cull_notebooks.name
