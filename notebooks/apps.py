from django.apps import AppConfig


class NotebooksConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "notebooks"
    verbose_name = "Interactive sessions"

    def ready(self) -> None:
        from jobs import services as job_services
        from notebooks import services, tasks  # noqa: F401  (every process knows every task)

        job_services.JOB_ENVIRONMENT.append(services.job_environment)
