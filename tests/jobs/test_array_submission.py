"""An array is written by the database in two statements: every element and its `submitted` event, or nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings
from rest_framework.test import APIClient

from jobs import bulk
from jobs import services as job_services
from jobs.models import Job, JobEvent
from jobs.spec import SpecError
from jobs.states import JobState
from portal.models import Membership, Team, TeamRole, User

BODY = {
    "name": "sweep",
    "command": ["python", "train.py"],
    "env": {"SEED": "7"},
    "gpu_model": "a100",
    "gpus_per_node": 1,
    "walltime": 600,
    "checkpoint_interval": 600,
}
# Columns an element takes from its array rather than from the request as a single job would.
PER_ELEMENT = {"id", "name", "env", "array_id", "array_index", "submitted_at", "state_changed_at"}


def test_every_element_and_its_submitted_event_are_written_in_index_order(
    grid: Any, alice: User, api: Callable[[User | None], APIClient]
) -> None:
    response = api(alice).post("/api/v1/jobs/", {**BODY, "array": "4-13:3"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    jobs = list(Job.objects.filter(array_id=body["array_id"]).order_by("array_index"))
    assert body["count"] == 4 and body["ids"] == [job.pk for job in jobs]
    assert [(j.array_index, j.name, j.env) for j in jobs] == [
        (i, f"sweep[{i}]", {"SEED": "7", "ARRAY_INDEX": str(i)}) for i in (4, 7, 10, 13)
    ]
    events = JobEvent.objects.filter(job__in=jobs)
    assert sorted(e.job_id for e in events) == sorted(body["ids"])
    assert {(e.from_state, e.to_state, e.actor, e.reason, e.at) for e in events} == {
        ("", JobState.PENDING, "alice", "submitted", jobs[0].submitted_at)
    }


def test_an_element_holds_what_the_same_request_holds_as_a_single_job(grid: Any, alice: User) -> None:
    (single,) = job_services.submit(alice, dict(BODY))
    first, second = job_services.submit(alice, {**BODY, "array": "2"})
    rows = {row["id"]: row for row in Job.objects.values()}
    shared = {k: v for k, v in rows[single.pk].items() if k not in PER_ELEMENT}
    for element in (first, second):
        assert {k: v for k, v in rows[element.pk].items() if k not in PER_ELEMENT} == shared
    assert first.submitted_at == second.submitted_at and first.array_id == second.array_id is not None


def test_an_element_index_replaces_an_array_index_given_in_env(grid: Any, alice: User) -> None:
    (job,) = job_services.submit(alice, {**BODY, "env": {"ARRAY_INDEX": "x"}, "array": "5-5"})
    assert Job.objects.get(pk=job.pk).env == {"ARRAY_INDEX": "5"}


def test_an_array_past_a_pending_limit_creates_nothing(
    settings: Settings, grid: Any, alice: User, api: Callable[[User | None], APIClient]
) -> None:
    settings.MAX_PENDING_JOBS_PER_TEAM = 10
    refused = api(alice).post("/api/v1/jobs/", {**BODY, "array": "0-10"}, format="json")
    assert refused.status_code == 400
    assert refused.json() == {"pending_jobs": ["your team has 0 jobs waiting; 11 more would pass its limit of 10"]}
    assert not Job.objects.exists() and not JobEvent.objects.exists()


def test_a_failure_after_the_inserts_leaves_no_element_and_enqueues_nothing(
    grid: Any, alice: User, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    def broken(*args: Any) -> None:
        assert Job.objects.filter(owner=alice).count() == 3  # the elements were there inside the transaction
        raise RuntimeError("broadcast refused")

    monkeypatch.setattr(job_services, "send_on_commit", broken)
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError):
        job_services.submit_request(alice, {**BODY, "array": "3"})
    assert not Job.objects.exists() and not JobEvent.objects.exists()
    assert callbacks == []


def test_the_admission_task_and_the_grid_notice_wait_for_the_commit(
    grid: Any, alice: User, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    enqueued: list[Any] = []

    def enqueue_now(task: Any, *args: Any) -> bool:
        enqueued.append(task)
        return True

    monkeypatch.setattr("portal.queue.enqueue_now", enqueue_now)
    with django_capture_on_commit_callbacks() as callbacks:
        submission = job_services.submit_request(alice, {**BODY, "array": "3"})
        assert enqueued == []
    assert len(submission.job_ids) == 3
    assert {callback.__qualname__ for callback in callbacks} == {"enqueue jobs.tasks.admission_cycle", "push to grid"}
    for callback in callbacks:
        if callback.__qualname__.startswith("enqueue"):
            callback()
    assert enqueued == ["jobs.tasks.admission_cycle"]


@pytest.mark.parametrize("side", ["below", "above"])
def test_the_user_limit_counts_the_users_jobs_in_every_team(settings: Settings, grid: Any, alice: User, side: str) -> None:
    vision = Team.objects.get(slug="vision")
    other = Team.objects.create(pk=vision.pk - 1 if side == "below" else vision.pk + 1000, slug="other", name="Other")
    Membership.objects.create(user=alice, team=other, role=TeamRole.RESEARCHER)
    settings.MAX_PENDING_JOBS_PER_USER = 5
    job_services.submit(alice, {**BODY, "team": "other", "array": "3"})
    job_services.submit(alice, {**BODY, "team": "vision"})
    with pytest.raises(SpecError) as caught:
        job_services.submit(alice, {**BODY, "team": "vision", "array": "2"})
    assert caught.value.errors == {"pending_jobs": ["you have 4 jobs waiting; 2 more would pass your limit of 5"]}
    assert Job.objects.filter(owner=alice).count() == 4


def test_element_indices_must_step_evenly_upwards() -> None:
    assert bulk.elements((4, 7, 10)).params == (4, 3, 3, 10)
    assert bulk.elements((9,)).params == (9, 1, 1, 9)
    for uneven in ((), (1, 2, 4), (3, 2, 1)):
        with pytest.raises(ValueError):
            bulk.elements(uneven)
