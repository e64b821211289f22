"""Thin Celery tasks over notebooks.services: follow one notebook, and the periodic cull loop."""

from __future__ import annotations

from celery import shared_task

from notebooks import services


@shared_task(name="notebooks.tasks.refresh_notebook", acks_late=True)
def refresh_notebook(notebook_id: int) -> str | None:
    return services.refresh(notebook_id)


@shared_task(name="notebooks.tasks.cull_notebooks", acks_late=True)
def cull_notebooks() -> dict[str, int]:
    return services.cull_cycle()
