from django.apps import AppConfig


class ClusterConfig(AppConfig):
    name = "cluster"
    verbose_name = "Cluster: pools, nodes and backends"

    def ready(self) -> None:
        # Register this app's Celery tasks in every process, so a service can enqueue one by name.
        from cluster import tasks  # noqa: F401
        from cluster.models import Node, Pool
        from cluster.services import watch_capacity

        watch_capacity(Node)
        watch_capacity(Pool)
