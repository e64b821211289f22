from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Accounts and teams"

    def ready(self) -> None:
        # Register this app's Celery tasks in every process, so a service can enqueue one by name.
        # A password change or reset offers to revoke the user's API tokens (they survive it otherwise).
        from allauth.account import signals

        from portal import tasks  # noqa: F401
        from portal.fanout import connect_announcements
        from portal.tokens import offer_revocation_after_password_change

        for signal in (signals.password_changed, signals.password_set, signals.password_reset):
            signal.connect(offer_revocation_after_password_change, dispatch_uid=f"tokens-{id(signal)}")
        # Live pages check every message against cached access facts: a change of access must reach them.
        connect_announcements()
