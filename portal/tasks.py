"""Celery tasks of the portal app: thin wrappers over portal.telemetry."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from portal import telemetry


@shared_task(acks_late=False, ignore_result=True, expires=10)
def telemetry_cycle() -> dict[str, Any]:
    """One telemetry cycle; not acked late and soon expired: a missed cycle is replaced by the next, never replayed."""
    report = telemetry.run_cycle()
    return {"stale": report.stale, "gpus": report.gpus, "guard": len(report.guarded), "idle": len(report.idle)}
