"""Enqueue Celery work once the current transaction commits: persist first, then enqueue."""

from __future__ import annotations

import logging
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from kombu.exceptions import OperationalError

from portal.breaker import Breaker

log = logging.getLogger(__name__)
BROKER_ERRORS = (OperationalError, redis.RedisError, OSError)
# While the broker is unreachable enqueues are skipped rather than each waiting on a connection:
# the work is saved and the periodic cycles (admission, sync, reaper) pick it up.
broker = Breaker("celery broker", cooldown_s=2.0)


def enqueue_now(task: Any, *args: Any) -> bool:
    """Send `task` now; False (logged) if the broker cannot take it, which leaves it to the periodic cycles."""
    name = getattr(task, "name", task)
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


def after_commit(task: Any, *args: Any) -> None:
    """Enqueue `task` with `args` after commit (never for rolled-back work).

    A broker outage must not turn a saved submission into an error the client would retry (and so
    submit twice): the work is already saved and periodic cycles pick it up.
    """

    def enqueue() -> None:
        enqueue_now(task, *args)

    # Django names the callback when it logs a failure; a plain closure has the name it needs.
    enqueue.__qualname__ = f"enqueue {getattr(task, 'name', task)}"
    transaction.on_commit(enqueue, robust=True)
