from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Accounts and teams"

    def ready(self) -> None:
        # Register this app's Celery tasks in every process, so a service can enqueue one by name.
        # A password change or reset offers to revoke the user's API tokens (they survive it otherwise).
        from allauth.account import signals
        from django.db.models.signals import post_delete, post_save

        from portal import tasks  # noqa: F401
        from portal.fanout import connect_announcements
        from portal.models import ApiToken, Membership, Team, User
        from portal.tokens import (
            forget_member,
            forget_team_members,
            forget_token,
            forget_user,
            offer_revocation_after_password_change,
        )

        for signal in (signals.password_changed, signals.password_set, signals.password_reset):
            signal.connect(offer_revocation_after_password_change, dispatch_uid=f"tokens-{id(signal)}")
        # A cached API token is dropped when it, its user or the user's teams change (deactivated, deleted,
        # revoked by the admin, joined or left a team; a deleted team's memberships go one by one).
        for model, receiver in ((User, forget_user), (ApiToken, forget_token), (Membership, forget_member)):
            post_save.connect(receiver, sender=model, dispatch_uid=f"token-cache-{model.__name__}")
            post_delete.connect(receiver, sender=model, dispatch_uid=f"token-cache-{model.__name__}")
        post_save.connect(forget_team_members, sender=Team, dispatch_uid="token-cache-Team")
        # Live pages check every message against cached access facts: a change of access must reach them.
        connect_announcements()
