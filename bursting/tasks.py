"""Celery tasks: thin wrappers that take ids and call bursting.services. All are safe to repeat."""

from __future__ import annotations

from celery import shared_task

from bursting import services
from cluster.backends.base import BackendUnavailable

RETRY = {"autoretry_for": (BackendUnavailable,), "retry_backoff": 1, "retry_backoff_max": 60, "max_retries": None}


@shared_task(acks_late=True)
def burst_cycle() -> dict[str, int]:
    return services.cycle()


@shared_task(acks_late=True, **RETRY)
def provision_burst(burst_id: int) -> int:
    return services.provision(burst_id)
