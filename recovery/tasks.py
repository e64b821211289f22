"""The nightly recovery run: a thin task over recovery.services."""

from __future__ import annotations

from celery import shared_task

from recovery import services


@shared_task(name="recovery.tasks.nightly", ignore_result=True)
def nightly() -> dict[str, int]:
    """Snapshot and replicate every team's checkpoints, settle earlier snapshots, delete expired ones."""
    return services.nightly().counts()
