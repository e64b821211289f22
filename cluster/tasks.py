"""Celery tasks of the cluster app: thin wrappers over cluster.services."""

from celery import shared_task

from cluster import services
from portal.loops import timed


@shared_task(acks_late=True)
def sync_nodes() -> int:
    with timed("nodes"):
        return services.sync_nodes()
