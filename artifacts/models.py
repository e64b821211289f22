"""Where each job's files are, and each team's retention and measured usage."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone

from jobs.models import Job
from portal.models import Team
from portal.permissions import VIEW, RestrictedModel, Rule, is_operator, of_led_teams


class JobArtifacts(RestrictedModel):
    """A job's output and checkpoint locations on the store, fixed when first handed to the job."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        # The job's own rule: members see their teams' jobs' files; only the service layer writes rows.
        if action != VIEW:
            return is_operator(user)
        teams = Job.viewable_team_ids(user)
        return True if teams is None else Q(team_id__in=teams)

    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="artifacts")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    store = models.CharField(max_length=300, help_text="ARTIFACT_STORE when the locations were made.")
    output = models.CharField(max_length=500, help_text="Key prefix of the job's outputs, e.g. vision/42/output/.")
    checkpoints = models.CharField(max_length=500, help_text="Key prefix of the job's checkpoints.")
    created_at = models.DateTimeField(default=timezone.now)
    purged_at = models.DateTimeField(null=True, blank=True, help_text="When retention deleted the files.")
    purged_files = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["team", "purged_at"], name="artifacts_team_purged")]

    def __str__(self) -> str:
        return f"artifacts of job #{self.job_id}"


class TeamArtifacts(RestrictedModel):
    """A team's retention policy and the bytes its jobs keep on the store (measured periodically)."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        # Members see their team's figure; a team lead or an operator sets the retention.
        if is_operator(user):
            return True
        if action == VIEW:
            return Q(team_id__in=list(user.team_ids))
        return of_led_teams(user)

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="artifact_policy")
    retention_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Days kept after a job ends; empty: the site default."
    )
    usage_bytes = models.BigIntegerField(default=0)
    usage_files = models.BigIntegerField(default=0)
    measured_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"artifacts of team {self.team_id}"
