"""Celery tasks: thin wrappers that take ids and call jobs.services. All are safe to repeat."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from cluster.backends.base import BackendUnavailable
from jobs import planning, services
from portal import queue
from portal.loops import timed
from portal.models import Heartbeat

RETRY = {"autoretry_for": (BackendUnavailable,), "retry_backoff": 1, "retry_backoff_max": 60, "max_retries": None}


@shared_task(acks_late=True)
def admission_cycle() -> int:
    queue.started(admission_cycle)  # before reading: a commit from now on enqueues the next cycle
    Heartbeat.beat("worker")
    with timed("admission"):
        return len(services.admit_and_dispatch())


@shared_task(acks_late=True, **RETRY)
def dispatch_job(job_id: int) -> bool:
    return services.dispatch(job_id)


@shared_task(acks_late=True, **RETRY)
def dispatch_jobs(job_ids: list[int]) -> list[int]:
    return services.dispatch_many(job_ids)


@shared_task(acks_late=True, **RETRY)
def cancel_on_backend(job_id: int) -> bool:
    return services.cancel_on_backend(job_id)


@shared_task(acks_late=True, **RETRY)
def preempt_on_backend(job_id: int) -> bool:
    return services.preempt_on_backend(job_id)


@shared_task(acks_late=True)
def sync_backend() -> dict[str, Any]:
    with timed("sync"):
        report = services.sync_jobs()
    return report.__dict__


@shared_task(acks_late=True)
def follow_backend(seconds: float) -> int:
    """Follow the backend closely for a while (job ends noticed within a poll, GPUs refilled at once)."""
    return services.follow_backend(seconds)


@shared_task(acks_late=True)
def run_what_if(run_id: int) -> None:
    planning.execute(run_id)


@shared_task(acks_late=True)
def reap_stale() -> dict[str, int]:
    return services.reap_stale()


@shared_task(acks_late=True)
def record_grid_sample() -> int:
    return services.record_grid_sample()
