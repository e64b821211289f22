"""Enqueue Celery work once the current transaction commits: persist first, then enqueue.

Services name the task they enqueue by its registered name ("jobs.tasks.dispatch_job"): tasks
are thin wrappers that import the services, so a service importing its tasks would close a
cycle. tests/test_architecture.py checks that every name given here is a registered task.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from kombu.exceptions import OperationalError

from portal.breaker import Breaker
from portal.celery import app as celery_app

log = logging.getLogger(__name__)
BROKER_ERRORS = (OperationalError, redis.RedisError, OSError)
# While the broker is unreachable enqueues are skipped rather than each waiting on a connection:
# the work is saved and the periodic cycles (admission, sync, reaper) pick it up.
broker = Breaker("celery broker", cooldown_s=2.0)


def registered(task: Any) -> Any:
    """The Celery task itself, given it or its registered name."""
    if isinstance(task, str):
        return celery_app.tasks[task]
    return task


def enqueue_now(task: Any, *args: Any) -> bool:
    """Send `task` (a task or its name) now; False (logged) if the broker cannot take it: the periodic cycles then do it."""
    name = getattr(task, "name", task)
    task = registered(task)
    app = getattr(task, "app", None)
    eager = app.conf.task_always_eager if app is not None else settings.CELERY_TASK_ALWAYS_EAGER
    if eager:  # runs here and now: its own errors are not the broker's
        task.delay(*args)
        return True
    if broker.is_open:
        log.info("broker down: %s left to the periodic cycle", name)
        return False
    try:
        task.delay(*args)
    except BROKER_ERRORS as exc:
        broker.failed(exc)
        log.warning("could not enqueue %s, left to the periodic cycle: %s", name, exc)
        return False
    broker.succeeded()
    return True


# Tasks that take no arguments and read everything they act on when they start (the admission
# cycle): one queued and not yet started serves every commit before it starts, so a second one
# would only repeat its work. `after_commit` enqueues such a task only when none is waiting; the
# task calls `started()` first thing, before it reads anything. The mark expires after
# QUEUED_MARK_S, so a lost message holds nothing up for longer than that.
COALESCED = frozenset({"jobs.tasks.admission_cycle"})
QUEUED_MARK_S = 5


def _queued_key(name: str) -> str:
    return f"queued:{name}"


def started(task: Any) -> None:
    """Called by a coalesced task as it starts: commits from now on enqueue it again."""
    from django.core.cache import cache

    cache.delete(_queued_key(getattr(task, "name", task)))


def _mark_queued(name: str) -> bool:
    """True if no run of `name` was waiting (this caller must enqueue one); False if one is."""
    from django.core.cache import cache

    return bool(cache.add(_queued_key(name), 1, timeout=QUEUED_MARK_S))


def after_commit(task: Any, *args: Any) -> None:
    """Enqueue `task` with `args` after commit (never for rolled-back work).

    A broker outage must not turn a saved submission into an error the client would retry (and so
    submit twice): the work is already saved and periodic cycles pick it up.
    """
    name = getattr(task, "name", task)
    coalesced = not args and name in COALESCED

    def enqueue() -> None:
        if coalesced and not _mark_queued(name):
            return
        if not enqueue_now(task, *args) and coalesced:
            started(name)  # nothing was queued after all

    # Django names the callback when it logs a failure; a plain closure has the name it needs.
    enqueue.__qualname__ = f"enqueue {getattr(task, 'name', task)}"
    transaction.on_commit(enqueue, robust=True)
