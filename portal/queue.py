"""Enqueue Celery work once the current transaction commits: persist first, then enqueue."""

from __future__ import annotations

import functools
from typing import Any

from django.db import transaction


def after_commit(task: Any, *args: Any) -> None:
    """Enqueue `task` with `args` after commit (never for rolled-back work)."""
    # robust: the work is already saved and periodic cycles pick it up, so a broker outage must not
    # turn a saved submission into an error the client would retry (and so submit twice).
    transaction.on_commit(functools.partial(task.delay, *args), robust=True)
