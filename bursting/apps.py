from django.apps import AppConfig


class BurstingConfig(AppConfig):
    name = "bursting"
    verbose_name = "Cloud bursting"

    def ready(self) -> None:
        # Register this app's Celery tasks in every process, so a service can enqueue one by name.
        from bursting import tasks  # noqa: F401
