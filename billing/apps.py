from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing: rate cards, metering, invoices, budgets"

    def ready(self) -> None:
        from billing import tasks  # noqa: F401 - registers this app's Celery tasks in every process

        # Budget actions reach the admission scheduler through the quotas registry (jobs never imports billing).
        from billing.services.budgets import team_restrictions
        from quotas import restrictions

        restrictions.register(team_restrictions)
