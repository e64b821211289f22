"""Celery tasks of the top layer: a thin wrapper over grid.telemetry."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from grid import telemetry
from portal.loops import timed


@shared_task(acks_late=False, ignore_result=True, expires=10)
def telemetry_cycle() -> dict[str, Any]:
    """One telemetry cycle; not acked late and soon expired: a missed cycle is replaced by the next, never replayed."""
    with timed("telemetry"):
        report = telemetry.run_cycle()
    return {"stale": report.stale, "gpus": report.gpus, "guard": len(report.guarded), "idle": len(report.idle)}


@shared_task(acks_late=False, ignore_result=True, expires=60)
def efficiency_accounting() -> dict[str, Any]:
    """Add what Prometheus recorded since the last pass to the jobs' efficiency sums (a cursor makes it once)."""
    with timed("efficiency"):
        report = telemetry.account_efficiency()
    return {"skipped": report.skipped, "jobs": report.jobs}
