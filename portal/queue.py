"""Enqueue Celery work once the current transaction commits: persist first, then enqueue."""

from __future__ import annotations

import functools
from typing import Any

from django.db import transaction


def after_commit(task: Any, *args: Any) -> None:
    """Enqueue `task` with `args` after commit (never for rolled-back work)."""
    transaction.on_commit(functools.partial(task.delay, *args))
