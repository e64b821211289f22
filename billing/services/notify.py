"""Tell finance and a team's leads about billing events: an in-app notification and an e-mail each."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing.models import Notification
from portal.models import TeamRole, User
from portal.permissions import CHANGE

log = logging.getLogger(__name__)


def finance_users() -> list[User]:
    return list(User.objects.filter(Q(is_finance=True) | Q(is_superuser=True), is_active=True).order_by("id"))


def team_leads(team_id: int) -> list[User]:
    return list(User.objects.filter(memberships__team_id=team_id, memberships__role=TeamRole.LEAD, is_active=True).order_by("id"))


def notify(users: Iterable[User], subject: str, body: str, team_id: int | None = None) -> int:
    """Store an in-app notification per user now; send the e-mails once the transaction commits."""
    recipients = {u.pk: u for u in users}.values()
    Notification.objects.bulk_create(
        [Notification(recipient=u, team_id=team_id, subject=subject[:200], body=body) for u in recipients]
    )
    addresses = sorted({u.email for u in recipients if u.email})
    if addresses:
        transaction.on_commit(functools.partial(_send, subject, body, addresses))
    return len(recipients)


def _send(subject: str, body: str, addresses: list[str]) -> None:
    sender = getattr(settings, "BILLING_FROM_EMAIL", None) or settings.DEFAULT_FROM_EMAIL
    try:
        send_mail(subject, body, sender, addresses)
    except OSError as exc:  # the in-app notification is already stored; a mail outage must not undo it
        log.warning("billing e-mail %r to %s not sent: %s", subject, addresses, exc)


def mark_read(user: User) -> int:
    """Mark the user's unread notifications read; how many."""
    return Notification.objects.restrict(user, CHANGE).filter(read_at__isnull=True).update(read_at=timezone.now())
