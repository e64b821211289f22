from django.apps import AppConfig


class GridConfig(AppConfig):
    name = "grid"
    verbose_name = "Grid: pages and cycles across the apps"

    def ready(self) -> None:
        # Register this app's Celery tasks in every process, so a service can enqueue one by name.
        from grid import tasks  # noqa: F401
