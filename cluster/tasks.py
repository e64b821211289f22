"""Celery tasks of the cluster app: thin wrappers over cluster.services."""

from celery import shared_task

from cluster import services


@shared_task(acks_late=True)
def sync_nodes() -> int:
    return services.sync_nodes()
