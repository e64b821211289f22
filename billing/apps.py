from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing: rate cards, metering, invoices, budgets"

    def ready(self) -> None:
        # Budget actions reach the admission scheduler through the quotas registry (jobs never imports billing).
        from billing.services.budgets import team_restrictions
        from quotas import restrictions

        restrictions.register(team_restrictions)
