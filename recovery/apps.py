from django.apps import AppConfig


class RecoveryConfig(AppConfig):
    name = "recovery"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobs import services as job_services
        from recovery import services, tasks  # noqa: F401  (every process knows every task)

        # A job restored from a volume snapshot mounts the claim made from it (jobs.services.job_request).
        if services.job_environment not in job_services.JOB_ENVIRONMENT:
            job_services.JOB_ENVIRONMENT.append(services.job_environment)
