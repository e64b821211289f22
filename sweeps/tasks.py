"""Celery tasks: thin wrappers over sweeps.services that take ids. Safe to repeat."""

from __future__ import annotations

from celery import shared_task

from sweeps import services


@shared_task(acks_late=True)
def advance_sweep(sweep_id: int) -> str | None:
    return services.advance(sweep_id)


@shared_task(acks_late=True)
def advance_sweeps() -> int:
    """The periodic cycle: every running sweep is advanced."""
    ids = services.running_sweep_ids()
    for sweep_id in ids:
        services.advance(sweep_id)
    return len(ids)
