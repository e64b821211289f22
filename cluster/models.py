"""Pools and nodes as the portal sees them, their history, and the simulated grid's own state."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone

from cluster.states import NodeState, PoolKind
from portal.permissions import VIEW, RestrictedModel, Rule, is_operator


class Pool(RestrictedModel):
    """A group of nodes with one GPU model (on-premises, or a cloud burst pool)."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        return True if action == VIEW else is_operator(user)  # the grid's shape is no secret

    name = models.CharField(max_length=60, unique=True)
    kind = models.CharField(max_length=10, choices=PoolKind.choices, default=PoolKind.ONPREM)
    gpu_model = models.CharField(max_length=20)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Node(RestrictedModel):
    """A GPU node, synced from the backend; the portal's copy used for admission and display."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        return True if action == VIEW else is_operator(user)  # the grid's shape is no secret

    name = models.CharField(max_length=120, unique=True)
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="nodes")
    gpu_model = models.CharField(max_length=20)
    gpus = models.PositiveIntegerField()
    gpus_used = models.PositiveIntegerField(default=0, help_text="As the backend last reported.")
    state = models.CharField(max_length=12, choices=NodeState.choices, default=NodeState.READY)
    reason = models.CharField(max_length=255, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["pool__name", "name"]

    def __str__(self) -> str:
        return self.name


class NodeEvent(RestrictedModel):
    """Append-only record of a node's state changes: who, when, why."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(default=timezone.now, db_index=True)
    from_state = models.CharField(max_length=12, choices=NodeState.choices)
    to_state = models.CharField(max_length=12, choices=NodeState.choices)
    actor = models.CharField(max_length=150, help_text="Username, or 'system' for automatic changes.")
    reason = models.CharField(max_length=255, blank=True)
    drain_report = models.JSONField(
        default=dict, blank=True, help_text="A drain's report from the backend: {evicted, blocked: {pod: why}, skipped}."
    )

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.node_id}: {self.from_state} → {self.to_state}"


class GridSample(RestrictedModel):
    """One point of a pool's history: capacity, allocation and queue, for the dashboard's charts."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        return True if action == VIEW else is_operator(user)  # the grid's shape is no secret

    at = models.DateTimeField(default=timezone.now, db_index=True)
    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="samples")
    gpus_total = models.PositiveIntegerField()
    gpus_healthy = models.PositiveIntegerField()
    gpus_allocated = models.PositiveIntegerField()
    jobs_running = models.PositiveIntegerField()
    jobs_pending = models.PositiveIntegerField()
    gpus_pending = models.PositiveIntegerField()

    class Meta:
        ordering = ["at"]

    def __str__(self) -> str:
        return f"{self.pool_id} at {self.at:%H:%M:%S}"


class SimNode(RestrictedModel):
    """A node of the simulated grid: the simulator's own state, as a real cluster would keep it."""

    name = models.CharField(max_length=120, unique=True)
    pool = models.CharField(max_length=60)
    pool_kind = models.CharField(max_length=10, choices=PoolKind.choices)
    gpu_model = models.CharField(max_length=20)
    gpus = models.PositiveIntegerField()
    state = models.CharField(max_length=12, choices=NodeState.choices, default=NodeState.READY)
    reason = models.CharField(max_length=255, blank=True)
    fault = models.CharField(max_length=12, blank=True, help_text="overheat | xid | down, injected on demand")
    fault_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pool", "name"]

    def __str__(self) -> str:
        return self.name


class SimJob(RestrictedModel):
    """A job on the simulated grid, keyed by the portal job id it carries."""

    portal_job_id = models.BigIntegerField(unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20)
    command = models.JSONField(default=list, blank=True, help_text="The job's arguments; its simulated log follows them.")
    gpu_model = models.CharField(max_length=20)
    gpus_per_node = models.PositiveIntegerField()
    nodes_wanted = models.PositiveIntegerField()
    requested_nodes = models.JSONField(default=list)
    placement = models.JSONField(default=dict, help_text="{node: [gpu indices]} once running")
    state = models.CharField(max_length=12, default="pending")
    reason = models.CharField(max_length=120, blank=True)
    exit_code = models.IntegerField(null=True)
    submitted_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True)
    ends_at = models.DateTimeField(null=True)
    ended_at = models.DateTimeField(null=True)
    runtime_s = models.FloatField(help_text="Real seconds it will run (simulated time / speed).")
    outcome_state = models.CharField(max_length=12)
    outcome_exit_code = models.IntegerField()
    outcome_reason = models.CharField(max_length=120, blank=True)
    load = models.FloatField()
    memory_fraction = models.FloatField()
    # Checkpoints (docs/artifacts.md): the job writes its progress every `checkpoint_every_s` of simulated
    # work into `checkpoint_dir`; a new attempt after preemption starts from the last one.
    checkpoint_dir = models.CharField(max_length=500, blank=True)
    checkpoint_every_s = models.FloatField(default=0.0, help_text="Simulated seconds of work between checkpoints; 0: none.")
    work_total_s = models.FloatField(default=0.0, help_text="Simulated seconds of work the whole job needs.")
    work_done_s = models.FloatField(default=0.0, help_text="Simulated seconds of work done before this attempt started.")
    last_checkpoint_s = models.FloatField(default=0.0, help_text="The work saved in the last checkpoint written.")
    attempts = models.PositiveIntegerField(default=1)

    class Meta:
        indexes = [models.Index(fields=["state"])]

    def __str__(self) -> str:
        return f"sim job {self.pk} (portal #{self.portal_job_id})"


class SafeguardKind(models.TextChoices):
    """What the safeguards did (or an operator did to them)."""

    CORDON = "cordon", "Cordoned"
    DRAIN = "drain", "Drained"
    UNCORDON = "uncordon", "Uncordoned"
    OVERRIDE = "override", "Operator override"
    IDLE_WARNING = "idle_warning", "Idle warning"
    IDLE_STOPPED = "idle_stopped", "Stopped as idle"
    IDLE_RECLAIMABLE = "idle_reclaimable", "Marked reclaimable"
    IDLE_CLEARED = "idle_cleared", "Working again"


class GuardState(RestrictedModel):
    """The thermal/health guard's memory of one node between cycles, and any operator override in force."""

    node = models.CharField(max_length=120, unique=True)
    trip = models.CharField(max_length=10, blank=True, help_text="thermal | xid while the guard holds the node cordoned")
    hot_since = models.DateTimeField(null=True, blank=True)
    cool_since = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=255, blank=True)
    override_until = models.DateTimeField(null=True, blank=True, help_text="The guard does not cordon before this.")
    override_by = models.CharField(max_length=150, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"guard of {self.node}: {self.trip or 'ok'}"


class SafeguardEvent(RestrictedModel):
    """Append-only audit trail of the safeguards: cordons, uncordons, overrides, idle decisions."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=20, choices=SafeguardKind.choices)
    node = models.CharField(max_length=120, blank=True, db_index=True)
    portal_job_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    actor = models.CharField(max_length=150, help_text="thermal-guard, idle-guard, or the operator's username")
    reason = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.node or self.portal_job_id} at {self.at:%H:%M:%S}"


class JobEfficiency(RestrictedModel):
    """A job's GPU efficiency: running sums while it runs, the summary once it ends (read by billing).

    Keyed by the portal job id, as the simulator's own records are: the cluster app never imports jobs.
    Also holds the job's idle streak and the idle decision shown on its page.
    """

    portal_job_id = models.BigIntegerField(unique=True)
    samples = models.PositiveIntegerField(default=0, help_text="GPU samples seen (one per GPU per cycle).")
    utilization_sum = models.FloatField(default=0.0)
    idle_samples = models.PositiveIntegerField(default=0)
    memory_peak_mib = models.FloatField(default=0.0)
    mean_utilization = models.FloatField(null=True, blank=True, help_text="Percent, set when the job ends.")
    idle_fraction = models.FloatField(null=True, blank=True, help_text="0-1, set when the job ends.")
    idle_since = models.DateTimeField(null=True, blank=True)
    warned_at = models.DateTimeField(null=True, blank=True)
    idle_decision = models.CharField(max_length=12, blank=True, help_text="stopped | reclaimable")
    final = models.BooleanField(default=False)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"efficiency of job #{self.portal_job_id}"


class EfficiencyCursor(RestrictedModel):
    """Up to when the recorded job summaries in Prometheus were added to JobEfficiency (one row).

    Moved in the same transaction as the sums it covers, so a window is added once: never twice
    after a crash, never skipped.
    """

    name = models.CharField(max_length=40, unique=True)
    until = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} accounted until {self.until:%Y-%m-%d %H:%M:%S}"


class UnresolvedExporter(RestrictedModel):
    """A host name in the telemetry that is neither a portal node nor an exporter whose node the
    cluster backend knows (cluster/telemetry/hosts.py): its series are left out of every decision.
    Counted on /metrics (`gridportal_telemetry_unresolved_series_total`) and noted on the dashboard."""

    name = models.CharField(max_length=253, unique=True)
    series = models.BigIntegerField(default=0, help_text="Series left out, over every cycle since first seen.")
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name}: {self.series} series left out, last {self.last_seen:%Y-%m-%d %H:%M:%S}"
