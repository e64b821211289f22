"""Sweeps, their trials and the metrics the trials report."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from jobs.models import Job, JobTemplate
from portal.models import Team
from portal.permissions import CHANGE, VIEW, RestrictedModel, Rule, is_operator, of_led_teams
from sweeps.states import Direction, EarlyStopping, Sampler, SweepState, TrialState


def _team_rule(user: Any, action: str, prefix: str = "") -> Rule:
    """The jobs' rule: members see their teams' sweeps; the owner, the team's lead and operators change them."""
    if is_operator(user):
        return True
    if action == VIEW:
        return Q(**{f"{prefix}team_id__in": list(user.team_ids)})
    return Q(**{f"{prefix}owner_id": user.pk}) | of_led_teams(user, f"{prefix}team_id")


class Sweep(RestrictedModel):
    """A hyperparameter search: trials of one base job spec over a search space, run as portal jobs."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        return _team_rule(user, action)

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="sweeps")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="sweeps")
    name = models.CharField(max_length=63)
    base_spec = models.JSONField(help_text="The job submission every trial starts from (jobs.spec fields).")
    template = models.ForeignKey(JobTemplate, null=True, blank=True, on_delete=models.SET_NULL)
    space = models.JSONField(help_text="{param: {type, low, high, log, step, points, choices}}")
    sampler = models.CharField(max_length=10, choices=Sampler.choices)
    metric = models.CharField(max_length=63)
    direction = models.CharField(max_length=10, choices=Direction.choices)
    max_trials = models.PositiveIntegerField()
    max_parallel = models.PositiveIntegerField()
    early_stopping = models.CharField(max_length=10, choices=EarlyStopping.choices)
    retries = models.PositiveSmallIntegerField(default=0)
    seed = models.PositiveIntegerField(default=0)
    state = models.CharField(max_length=12, choices=SweepState.choices, default=SweepState.RUNNING)
    detail = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["team", "-id"], name="sweep_team_recent")]

    def __str__(self) -> str:
        return f"sweep #{self.pk} {self.name}"


class Trial(RestrictedModel):
    """One point of a sweep's search space, run as a job (a new job per retry)."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        return _team_rule(user, action, "sweep__")

    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, related_name="trials")
    number = models.PositiveIntegerField(help_text="0, 1, 2, ... within the sweep")
    params = models.JSONField()
    state = models.CharField(max_length=12, choices=TrialState.choices, default=TrialState.RUNNING)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="sweep_trials")
    attempts = models.PositiveSmallIntegerField(default=1)
    failed_job_ids = models.JSONField(default=list, blank=True, help_text="Jobs of earlier attempts that failed.")
    token_hash = models.CharField(max_length=64, help_text="SHA-256 of the trial's report token (GRID_TRIAL_TOKEN).")
    value = models.FloatField(null=True, blank=True, help_text="The objective: the last reported value.")
    last_step = models.IntegerField(null=True, blank=True)
    optuna_attrs = models.JSONField(default=dict, blank=True, help_text="The pruner's bookkeeping (ASHA rungs).")
    detail = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["sweep", "number"]
        constraints = [models.UniqueConstraint(fields=["sweep", "number"], name="trial_number_once")]

    def __str__(self) -> str:
        return f"trial {self.number} of sweep #{self.sweep_id}"


class TrialReport(RestrictedModel):
    """One value of the sweep's metric that a trial reported at a step."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        if action == CHANGE:
            return False  # written only by the trial's own token, through sweeps.services.report
        return _team_rule(user, VIEW, "trial__sweep__")

    trial = models.ForeignKey(Trial, on_delete=models.CASCADE, related_name="reports")
    step = models.PositiveIntegerField()
    value = models.FloatField()
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["trial", "step"]
        constraints = [models.UniqueConstraint(fields=["trial", "step"], name="trial_report_step_once")]

    def __str__(self) -> str:
        return f"trial {self.trial_id} step {self.step}: {self.value:g}"
