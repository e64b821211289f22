"""Interactive sessions: a notebook is a portal job (kind `interactive`) plus the row that reaches its server."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from jobs.models import Job
from notebooks.states import EndReason, EventKind, NotebookState, ServerType
from portal.permissions import CHANGE, RestrictedModel, Rule, is_operator


def _owner_rule(user: Any, prefix: str = "") -> Rule:
    # A session is one person's: only its owner and operators see it (the job stays visible to the team).
    return True if is_operator(user) else Q(**{f"{prefix}owner_id": user.pk})


class Notebook(RestrictedModel):
    """A Jupyter or code-server session on a job's GPUs, reached only through the portal's proxy."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        return _owner_rule(user)

    job = models.OneToOneField(Job, on_delete=models.PROTECT, related_name="notebook")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="notebooks")
    server_type = models.CharField(max_length=12, choices=ServerType.choices, default=ServerType.JUPYTER)
    state = models.CharField(max_length=10, choices=NotebookState.choices, default=NotebookState.STARTING)
    end_reason = models.CharField(max_length=10, choices=EndReason.choices, default=EndReason.NONE, blank=True)
    detail = models.CharField(max_length=300, blank=True)
    token_salt = models.CharField(max_length=64, help_text="With SECRET_KEY, makes the server's one-time token.")
    token_hash = models.CharField(max_length=64, help_text="SHA-256 of the token (the token itself is never stored).")
    server_url = models.CharField(max_length=200, blank=True, help_text="http://host:port on the node; never shown to users.")
    server_pid = models.IntegerField(null=True, blank=True, help_text="Simulator only: the local server's process.")
    lifetime_s = models.PositiveIntegerField(help_text="The most the session may live (its job's walltime).")
    created_at = models.DateTimeField(default=timezone.now)
    ready_at = models.DateTimeField(null=True, blank=True)
    last_activity = models.DateTimeField(null=True, blank=True, help_text="The newer of the kernel's and the proxy's.")
    warned_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["state"], name="notebook_state")]

    def __str__(self) -> str:
        return f"notebook #{self.pk} ({self.server_type})"

    @property
    def proxy_path(self) -> str:
        return f"/notebooks/{self.pk}/proxy/"


class NotebookEvent(RestrictedModel):
    """Append-only history of a notebook: start, ready, warnings, operators opening it, its end."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        if action == CHANGE:
            return False
        return _owner_rule(user, "notebook__")

    notebook = models.ForeignKey(Notebook, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=16, choices=EventKind.choices)
    actor = models.CharField(max_length=150)
    detail = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"notebook #{self.notebook_id} {self.kind} by {self.actor}"
