"""Work that only says "look again" is folded per process: grid change notices at most one per gap
(the last always sent), an admission cycle enqueued only when none is waiting to start."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import cache

from portal import broadcast, queue


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, settings: Any) -> list[tuple[str, str]]:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    out: list[tuple[str, str]] = []

    async def record(group: str, message: dict[str, Any]) -> None:
        out.append((group, message["type"]))

    monkeypatch.setattr(broadcast, "_send", record)
    monkeypatch.setattr(broadcast, "_sender", broadcast._Sender())
    return out


def test_a_burst_of_grid_notices_sends_the_first_and_one_last(sent: list[tuple[str, str]]) -> None:
    for _ in range(20):
        broadcast.send_now("grid", {"type": "grid.changed"})
    assert sent == [("grid", "grid.changed")]
    time.sleep(broadcast.NOTICE_GAP_S + 0.3)
    assert sent == [("grid", "grid.changed")] * 2  # the trailing one: the burst's last change is announced
    time.sleep(broadcast.NOTICE_GAP_S + 0.1)
    broadcast.send_now("grid", {"type": "grid.changed"})  # after a quiet gap: sent at once
    assert len(sent) == 3


def test_other_messages_are_never_folded(sent: list[tuple[str, str]]) -> None:
    for _ in range(5):
        broadcast.send_now("job-1", {"type": "job.state"})
    assert sent == [("job-1", "job.state")] * 5


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    out: list[tuple[str, tuple[Any, ...]]] = []

    def record(task: Any, *args: Any) -> bool:
        out.append((getattr(task, "name", task), args))
        return True

    monkeypatch.setattr(queue, "enqueue_now", record)
    cache.clear()
    return out


@pytest.mark.django_db
def test_one_waiting_admission_cycle_serves_every_commit_before_it_starts(
    enqueued: list[tuple[str, tuple[Any, ...]]], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    name = "jobs.tasks.admission_cycle"
    for _ in range(5):
        with django_capture_on_commit_callbacks(execute=True):
            queue.after_commit(name)
    assert enqueued == [(name, ())]
    queue.started(name)  # the worker took it: the next commit needs a cycle of its own
    with django_capture_on_commit_callbacks(execute=True):
        queue.after_commit(name)
    assert enqueued == [(name, ())] * 2


@pytest.mark.django_db
def test_a_failed_enqueue_does_not_hold_up_the_next(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    cache.clear()
    calls: list[bool] = []

    def broker_down_once(task: Any, *args: Any) -> bool:
        calls.append(True)
        return len(calls) > 1

    monkeypatch.setattr(queue, "enqueue_now", broker_down_once)
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            queue.after_commit("jobs.tasks.admission_cycle")
    assert len(calls) == 2


@pytest.mark.django_db
def test_tasks_with_arguments_are_always_enqueued(
    enqueued: list[tuple[str, tuple[Any, ...]]], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    for job_id in (1, 1, 2):
        with django_capture_on_commit_callbacks(execute=True):
            queue.after_commit("jobs.tasks.dispatch_job", job_id)
    assert enqueued == [("jobs.tasks.dispatch_job", (1,)), ("jobs.tasks.dispatch_job", (1,)), ("jobs.tasks.dispatch_job", (2,))]
