"""Accounts and tenancy: users, teams, team membership with a role, API tokens."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.contrib.auth.models import AbstractUser
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from portal.permissions import VIEW, RestrictedModel, Rule, is_finance, is_operator, of_member_teams

SLUG_VALIDATOR = RegexValidator(
    r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$",
    "Use 2-40 lower-case letters, digits and dashes, starting with a letter.",
)


class User(AbstractUser):
    """A person or a script's identity. Operators and finance are site-wide roles."""

    is_operator = models.BooleanField(default=False, help_text="Drains nodes, approves bursts, sees every team.")
    is_finance = models.BooleanField(default=False, help_text="Sees invoices and costs of every team.")
    unix_username = models.CharField(
        max_length=32, blank=True, help_text="Account jobs run as on HPC backends; defaults to the username."
    )

    @property
    def team_ids(self) -> list[int]:
        return list(self.team_slugs)

    @property
    def team_slugs(self) -> dict[int, str]:
        """The user's teams, slug by id: read once per request (a cached API token's user carries them)."""
        cached: dict[int, str] | None = getattr(self, "_team_slugs", None)
        if cached is None:
            cached = dict(Membership.objects.filter(user=self).values_list("team_id", "team__slug"))
            self._team_slugs = cached
        return cached

    @property
    def lead_team_ids(self) -> list[int]:
        """Ids of the teams this user leads (cached for the request, like team_ids)."""
        cached: list[int] | None = getattr(self, "_lead_team_ids", None)
        if cached is None:
            cached = list(Membership.objects.filter(user=self, role=TeamRole.LEAD).values_list("team_id", flat=True))
            self._lead_team_ids = cached
        return cached


class Department(RestrictedModel):
    """A group of teams (Slurm's parent account, Kueue's cohort): they lend to each other first, and
    share the department's guarantee (`quotas.DepartmentQuota`) and its bill."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        if is_operator(user) or (action == VIEW and is_finance(user)):
            return True
        return Q(teams__pk__in=list(user.team_ids)) if action == VIEW else False

    slug = models.CharField(max_length=40, unique=True, validators=[SLUG_VALIDATOR])
    name = models.CharField(max_length=120)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Team(RestrictedModel):
    """A research team: one Slurm account, one Kubernetes namespace and Volcano queue."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        # Members see their teams; operators see and change every team.
        if is_operator(user):
            return True
        return Q(pk__in=list(user.team_ids)) if action == VIEW else False

    slug = models.CharField(max_length=40, unique=True, validators=[SLUG_VALIDATOR])
    name = models.CharField(max_length=120)
    members = models.ManyToManyField(User, through="Membership", related_name="teams")
    department = models.ForeignKey(
        Department, null=True, blank=True, on_delete=models.SET_NULL, related_name="teams", help_text="Optional."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class TeamRole(models.TextChoices):
    RESEARCHER = "researcher", "Researcher"
    LEAD = "lead", "Team lead"


class Membership(RestrictedModel):
    """A user's role in one team."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        if is_operator(user):
            return True
        return of_member_teams(user) if action == VIEW else False

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=TeamRole.choices, default=TeamRole.RESEARCHER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="one_membership_per_team")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


def hash_token(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiToken(RestrictedModel):
    """A revocable API token; only its SHA-256 is stored, the key is shown once at creation."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        return Q(user_id=user.pk)  # one's own tokens only, operators included

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=80)
    PREFIX_LENGTH = 8
    prefix = models.CharField(max_length=8, help_text="First characters of the key, to tell tokens apart.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, user: User, name: str) -> tuple[ApiToken, str]:
        key = "gp_" + secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, prefix=key[: cls.PREFIX_LENGTH], key_hash=hash_token(key))
        return token, key


class Heartbeat(RestrictedModel):
    """The last time a background component proved it was alive (for /healthz)."""

    name = models.CharField(max_length=40, unique=True)
    at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} at {self.at}"

    @classmethod
    def beat(cls, name: str) -> None:
        cls.objects.update_or_create(name=name, defaults={"at": timezone.now()})


class ControlLoop(RestrictedModel):
    """One background control loop's record (admission, backend sync, telemetry, ...), for /metrics.

    Updated once per run by `portal.loops.timed` with a conditional UPDATE of counters, so runs in
    several workers add up and nothing is read back first.
    """

    name = models.CharField(max_length=40, unique=True)
    period_s = models.FloatField(help_text="How often the loop is meant to run (seconds).")
    last_started_at = models.DateTimeField()
    last_finished_at = models.DateTimeField()
    last_ok_at = models.DateTimeField(null=True, blank=True)
    last_duration_s = models.FloatField()
    last_error = models.CharField(max_length=200, blank=True)
    runs = models.BigIntegerField(default=0)
    failures = models.BigIntegerField(default=0)
    seconds_total = models.FloatField(default=0.0)

    def __str__(self) -> str:
        return f"{self.name}: {self.runs} runs, last {self.last_duration_s:.3f} s"
