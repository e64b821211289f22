"""How the background control loops are doing: each run's duration, the time since the last good
run, and run and failure counts, kept in one `ControlLoop` row per loop and shown on /metrics.

A loop's lag is how far it is behind its own period: the time since its last successful run minus
the period it is scheduled at. A lag that keeps growing means the loop stopped (or keeps failing);
a duration above the period means it cannot keep up. monitoring/prometheus-rules.yml alerts on both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from portal.models import ControlLoop

log = logging.getLogger(__name__)

# Loop name -> the setting holding its period in seconds.
PERIOD_SETTINGS = {
    "admission": "GRID_CYCLE_S",
    "sync": "GRID_CYCLE_S",
    "nodes": "GRID_CYCLE_S",
    "telemetry": "TELEMETRY_CYCLE_S",
    "efficiency": "TELEMETRY_ACCOUNTING_S",
}
NODES_PERIOD_FACTOR = 5  # sync-nodes runs every fifth grid cycle (grid/settings.py CELERY_BEAT_SCHEDULE)


def period_of(name: str) -> float:
    """The period the loop is scheduled at, from the same settings the beat schedule uses."""
    period = float(getattr(settings, PERIOD_SETTINGS.get(name, "GRID_CYCLE_S")))
    return period * NODES_PERIOD_FACTOR if name == "nodes" else period


@contextmanager
def timed(name: str) -> Iterator[None]:
    """Record one run of the loop `name`: its duration, and whether it ended without an exception."""
    started = timezone.now()
    clock = time.perf_counter()
    try:
        yield
    except BaseException as error:
        record(name, started, time.perf_counter() - clock, error=f"{type(error).__name__}: {error}")
        raise
    record(name, started, time.perf_counter() - clock)


def record(name: str, started: datetime, seconds: float, error: str | None = None) -> None:
    """Add one run to the loop's row (created on its first run). Never raises: bookkeeping must not stop a loop."""
    now = timezone.now()
    plain: dict[str, object] = {
        "period_s": period_of(name),
        "last_started_at": started,
        "last_finished_at": now,
        "last_duration_s": seconds,
        "last_error": (error or "")[:200],
    }
    if error is None:
        plain["last_ok_at"] = now
    failed = 0 if error is None else 1
    counters = {"runs": F("runs") + 1, "seconds_total": F("seconds_total") + seconds, "failures": F("failures") + failed}
    try:
        with transaction.atomic():
            if ControlLoop.objects.filter(name=name).update(**plain, **counters):
                return
        try:
            with transaction.atomic():
                ControlLoop.objects.create(name=name, runs=1, failures=failed, seconds_total=seconds, **plain)
        except IntegrityError:  # another worker created it first
            with transaction.atomic():
                ControlLoop.objects.filter(name=name).update(**plain, **counters)
    except DatabaseError:
        log.warning("could not record a run of the %s loop", name, exc_info=True)


def lag_s(loop: ControlLoop, now: datetime) -> float:
    """Seconds the loop is behind its period (0 while on time); since its first run if it never succeeded."""
    since = loop.last_ok_at or loop.last_started_at
    return max(0.0, (now - since).total_seconds() - loop.period_s)
