"""Jobs, their event history and the templates they are submitted from."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from jobs.states import JobState, PendingReason
from portal.models import Team
from portal.permissions import CHANGE, VIEW, RestrictedModel, RestrictedQuerySet, Rule, is_operator, of_led_teams, of_member_teams


class JobKind(models.TextChoices):
    TRAINING = "training", "ML training"
    RENDERING = "rendering", "Rendering"
    SIMULATION = "simulation", "Scientific simulation"
    CUSTOM = "custom", "Custom script"
    INTERACTIVE = "interactive", "Interactive session"  # a notebook (notebooks app): runs until stopped or culled


class JobTemplate(RestrictedModel):
    """A pre-filled job form with the limits within which users may change it."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        return True if action == VIEW else is_operator(user)

    slug = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=20, choices=JobKind.choices)
    description = models.TextField(blank=True)
    image = models.CharField(max_length=300)
    command = models.JSONField(help_text="Argument list; {name} placeholders are filled from params.")
    params = models.JSONField(default=dict, blank=True, help_text="Default values of the command's placeholders.")
    gpu_model = models.CharField(max_length=20, default="a100")
    gpus_per_node = models.PositiveIntegerField(default=1)
    nodes = models.PositiveIntegerField(default=1)
    walltime_s = models.PositiveIntegerField(default=3600)
    max_gpus_per_node = models.PositiveIntegerField(default=8)
    max_nodes = models.PositiveIntegerField(default=1)
    max_walltime_s = models.PositiveIntegerField(default=24 * 3600)
    allowed_gpu_models = models.JSONField(default=list, blank=True, help_text="Empty: any model.")
    checkpoint_dir = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class JobQuerySet(RestrictedQuerySet["Job"]):
    def visible_to(self, user: Any) -> JobQuerySet:
        """The one rule for who sees which jobs: members see their teams', operators see all."""
        return self.restrict(user, VIEW)

    def visible_team_ids(self, user: Any) -> list[int] | None:
        """The teams whose jobs `visible_to(user)` holds; None: every team. The job list reads one team at a time."""
        if self.restrict(user, VIEW).query.is_empty():
            return []
        return Job.viewable_team_ids(user)


class Job(RestrictedModel):
    """One unit of GPU work; an array element is a Job with `array_id` and `array_index` set."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        # Members see their teams' jobs; the owner, the team's lead and operators may act on one.
        if action == VIEW:
            teams = cls.viewable_team_ids(user)
            return True if teams is None else Q(team_id__in=teams)
        if is_operator(user):
            return True
        return Q(owner_id=user.pk) | of_led_teams(user)

    @classmethod
    def viewable_team_ids(cls, user: Any) -> list[int] | None:
        """The teams whose jobs a signed-in, active `user` sees; None: every team. The VIEW rule is made of it."""
        return None if is_operator(user) else list(user.team_ids)

    # No single-column indexes of their own: job_team_recent and job_owner_recent lead with them, and
    # every index is one more write per submitted job.
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="jobs", db_index=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="jobs", db_index=False)
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=20, choices=JobKind.choices, default=JobKind.CUSTOM)
    template = models.ForeignKey(JobTemplate, null=True, blank=True, on_delete=models.SET_NULL)
    image = models.CharField(max_length=300, blank=True)
    command = models.JSONField(default=list)
    script = models.TextField(blank=True)
    env = models.JSONField(default=dict, blank=True)
    gpu_model = models.CharField(max_length=20)
    gpus_per_node = models.PositiveIntegerField()
    nodes = models.PositiveIntegerField(default=1)
    gpus = models.PositiveIntegerField(help_text="gpus_per_node × nodes")
    priority = models.CharField(max_length=30, default="standard")
    walltime_s = models.PositiveIntegerField()
    checkpoint_dir = models.CharField(max_length=300, blank=True)
    checkpoint_interval_s = models.PositiveIntegerField(
        null=True, blank=True, help_text="How often the job checkpoints; preemption picks jobs that lose least."
    )
    last_checkpoint_at = models.DateTimeField(null=True, blank=True, help_text="Reported by the job.")
    array_id = models.UUIDField(null=True, blank=True, db_index=True)
    array_index = models.PositiveIntegerField(null=True, blank=True)

    state = models.CharField(max_length=12, choices=JobState.choices, default=JobState.PENDING)
    reason = models.CharField(max_length=20, choices=PendingReason.choices, default=PendingReason.NEW, blank=True)
    reason_detail = models.CharField(max_length=300, blank=True)
    team_position = models.PositiveIntegerField(null=True, blank=True, help_text="Place in the team's line.")
    pool_position = models.PositiveIntegerField(null=True, blank=True, help_text="Place among all waiting jobs of its GPU model.")
    estimated_start = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(default=timezone.now)
    state_changed_at = models.DateTimeField(default=timezone.now)
    admitted_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    pool = models.CharField(max_length=60, blank=True)
    placement = models.JSONField(default=dict, blank=True, help_text="{node: GPUs} reserved at admission")
    backend = models.CharField(max_length=20, blank=True)
    backend_job_id = models.CharField(max_length=100, blank=True)

    objects = JobQuerySet.as_manager()  # type: ignore[misc]  # narrows the base's RestrictedQuerySet manager

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["team", "-id"], name="job_team_recent"),
            models.Index(fields=["state", "submitted_at", "id"], name="job_state_age"),
            models.Index(fields=["owner", "-id"], name="job_owner_recent"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.name}"


class JobEvent(RestrictedModel):
    """Append-only history of a job: every state change with who, when and why."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        if action == CHANGE:
            return False  # the timeline is append-only
        return True if is_operator(user) else of_member_teams(user, "job__team_id")

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(default=timezone.now)
    from_state = models.CharField(max_length=12, choices=JobState.choices, blank=True)
    to_state = models.CharField(max_length=12, choices=JobState.choices)
    actor = models.CharField(max_length=150)
    reason = models.CharField(max_length=300, blank=True)
    pool = models.CharField(max_length=60, blank=True, help_text="On admission: the pool the job's GPUs are in (billing).")

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"#{self.job_id} {self.from_state or '∅'} → {self.to_state}"


class PendingChange(RestrictedModel):
    """A change in how many jobs of a team and owner are pending, written only by the database's triggers
    on the job table (migration 0011) whenever a job becomes pending or stops being so, by any write
    path. The sum of a team's (or an owner's) rows is its pending count, read on every submit in
    constant time instead of counting the pending jobs; rows are only ever added, and a team's are
    folded into one per owner now and then (`jobs.services.fold_pending_changes`)."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        # Members see their teams' counts; nobody changes them but the database's triggers.
        if action != VIEW:
            return False
        return True if is_operator(user) else Q(team_id__in=list(user.team_ids))

    team_id = models.BigIntegerField()
    owner_id = models.BigIntegerField()
    delta = models.IntegerField()

    class Meta:
        indexes = [
            models.Index(fields=["team_id"], name="pending_change_team"),
            models.Index(fields=["owner_id"], name="pending_change_owner"),
        ]

    def __str__(self) -> str:
        return f"team {self.team_id} owner {self.owner_id} {self.delta:+d}"


class WhatIfState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class WhatIfRun(RestrictedModel):
    """A capacity-planning replay: recent real submissions through the policy, as the grid is and as it might be."""

    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="what_if_runs")
    created_at = models.DateTimeField(default=timezone.now)
    gpu_model = models.CharField(max_length=20)
    days = models.PositiveIntegerField()
    add_nodes = models.IntegerField(default=0, help_text="Nodes added (or removed, if negative) in the scenario.")
    quota_overrides = models.JSONField(default=dict, blank=True, help_text="{team: {guarantee, limit, weight}}")
    trace_csv = models.TextField(blank=True, help_text="An uploaded trace to replay instead of the grid's history.")
    pools = models.CharField(max_length=200, blank=True, help_text="A pool spec like a100:64x8,t4:32x4 (the grid now).")
    class_map = models.CharField(max_length=200, blank=True, help_text="Trace classes to the portal's: LS=critical,...")
    state = models.CharField(max_length=10, choices=WhatIfState.choices, default=WhatIfState.QUEUED)
    progress = models.FloatField(default=0.0)
    jobs_replayed = models.PositiveIntegerField(default=0)
    result = models.JSONField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"what-if #{self.pk} {self.gpu_model} +{self.add_nodes} nodes"
