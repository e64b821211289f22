from django.apps import AppConfig


class SweepsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "sweeps"
    verbose_name = "Hyperparameter sweeps"

    def ready(self) -> None:
        from sweeps import tasks  # noqa: F401  (every process knows every task)
