"""Team quotas per GPU model and the priority classes jobs may use."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from portal.models import Team
from portal.permissions import CHANGE, VIEW, RestrictedModel, Rule, is_operator, of_led_teams, of_member_teams


class PriorityClass(RestrictedModel):
    """A job priority: higher `rank` goes first; `preemptible` jobs may be stopped to reclaim GPUs."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        return True if action == VIEW else is_operator(user)

    name = models.SlugField(max_length=30, unique=True)
    rank = models.IntegerField(help_text="Higher ranks are admitted first.")
    preemptible = models.BooleanField(default=False)
    within_guarantee_only = models.BooleanField(
        default=False, help_text="Jobs of this class must fit in the team's guarantee (never borrow)."
    )
    description = models.CharField(max_length=200, blank=True)
    teams = models.ManyToManyField(
        "portal.Team", blank=True, related_name="+", help_text="Teams that may use this class; empty: every team."
    )

    class Meta:
        ordering = ["-rank"]
        verbose_name_plural = "priority classes"

    def __str__(self) -> str:
        return self.name


class QuotaChange(RestrictedModel):
    """Append-only audit of quota changes: who, when, what before and after, and why."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        if action == CHANGE:
            return False  # the audit trail is append-only
        return True if is_operator(user) else of_member_teams(user)

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=150)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="quota_changes")
    gpu_model = models.CharField(max_length=20)
    before = models.JSONField(null=True)
    after = models.JSONField()
    reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.team} {self.gpu_model} by {self.actor}"


class TeamUsage(RestrictedModel):
    """A team's decayed GPU usage (GPU-seconds), the history behind fair share."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        if action == CHANGE:
            return False  # written by the admission cycle only
        return True if is_operator(user) else of_member_teams(user)

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="usage")
    gpu_seconds = models.FloatField(default=0.0)
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.team}: {self.gpu_seconds:.0f} GPU-s"


class TeamQuota(RestrictedModel):
    """A team's share of one GPU model: guarantee, hard limit (borrowing included), weight, lending."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        # Members read their team's quota; its lead may change it (within what operators allow).
        if is_operator(user):
            return True
        return of_member_teams(user) if action == VIEW else of_led_teams(user)

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="quotas")
    gpu_model = models.CharField(max_length=20)
    guarantee = models.PositiveIntegerField(default=0, help_text="GPUs the team can always get back.")
    limit = models.PositiveIntegerField(help_text="Hard cap on admitted GPUs, borrowing included.")
    weight = models.PositiveIntegerField(default=1, help_text="Share of idle capacity.")
    lendable = models.BooleanField(default=True, help_text="Others may borrow the idle guarantee.")
    lead_max_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Highest limit the team's lead may set (empty: the current limit)."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "gpu_model"], name="one_quota_per_team_and_model"),
            models.CheckConstraint(condition=models.Q(limit__gte=models.F("guarantee")), name="limit_at_least_guarantee"),
        ]
        ordering = ["team__slug", "gpu_model"]

    def __str__(self) -> str:
        return f"{self.team} {self.gpu_model}: {self.guarantee}/{self.limit}"

    def clean(self) -> None:
        if self.limit < self.guarantee:
            raise ValidationError({"limit": f"limit ({self.limit}) must be at least the guarantee ({self.guarantee})"})


class DepartmentQuota(RestrictedModel):
    """A department's guarantee of one GPU model, split among its teams: their guarantees add up to at most this."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        if is_operator(user):
            return True
        return Q(department__teams__pk__in=list(user.team_ids)) if action == VIEW else False

    department = models.ForeignKey("portal.Department", on_delete=models.CASCADE, related_name="quotas")
    gpu_model = models.CharField(max_length=20)
    guarantee = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["department", "gpu_model"], name="one_department_quota_per_model")]

    def __str__(self) -> str:
        return f"{self.department} {self.gpu_model}: {self.guarantee}"
