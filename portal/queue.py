"""Enqueue Celery work once the current transaction commits: persist first, then enqueue."""

from __future__ import annotations

from typing import Any

from django.db import transaction


def after_commit(task: Any, *args: Any) -> None:
    """Enqueue `task` with `args` after commit (never for rolled-back work).

    Robust: the work is already saved and periodic cycles pick it up, so a broker outage must not
    turn a saved submission into an error the client would retry (and so submit twice).
    """

    def enqueue() -> None:
        task.delay(*args)

    # Django names the callback when it logs a failure; a plain closure has the name it needs.
    enqueue.__qualname__ = f"enqueue {getattr(task, 'name', task)}"
    transaction.on_commit(enqueue, robust=True)
