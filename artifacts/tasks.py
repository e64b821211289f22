"""Periodic artifact work: thin tasks over artifacts.services."""

from __future__ import annotations

from celery import shared_task

from artifacts import services


@shared_task(name="artifacts.tasks.measure_usage", ignore_result=True)
def measure_usage() -> int:
    """Measure every team's bytes on the store; returns how many teams were measured."""
    return len(services.measure_usage())


@shared_task(name="artifacts.tasks.purge_expired", ignore_result=True, acks_late=True)
def purge_expired() -> int:
    """Delete the files of jobs past their team's retention, in batches; returns how many jobs' files went."""
    return services.purge_expired()
