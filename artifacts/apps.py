from django.apps import AppConfig


class ArtifactsConfig(AppConfig):
    name = "artifacts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from artifacts import services, tasks  # noqa: F401  (every process knows every task)
        from jobs import services as job_services

        # Backends receive each job's locations in its environment (jobs.services.job_request).
        if services.job_environment not in job_services.JOB_ENVIRONMENT:
            job_services.JOB_ENVIRONMENT.append(services.job_environment)
