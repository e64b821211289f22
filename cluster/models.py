"""Pools and nodes as the portal sees them, their history, and the simulated grid's own state."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from cluster.states import NodeState, PoolKind


class Pool(models.Model):
    """A group of nodes with one GPU model (on-premises, or a cloud burst pool)."""

    name = models.CharField(max_length=60, unique=True)
    kind = models.CharField(max_length=10, choices=PoolKind.choices, default=PoolKind.ONPREM)
    gpu_model = models.CharField(max_length=20)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Node(models.Model):
    """A GPU node, synced from the backend; the portal's copy used for admission and display."""

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


class NodeEvent(models.Model):
    """Append-only record of a node's state changes: who, when, why."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(default=timezone.now, db_index=True)
    from_state = models.CharField(max_length=12, choices=NodeState.choices)
    to_state = models.CharField(max_length=12, choices=NodeState.choices)
    actor = models.CharField(max_length=150, help_text="Username, or 'system' for automatic changes.")
    reason = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.node_id}: {self.from_state} → {self.to_state}"


class GridSample(models.Model):
    """One point of a pool's history: capacity, allocation and queue, for the dashboard's charts."""

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


class SimNode(models.Model):
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


class SimJob(models.Model):
    """A job on the simulated grid, keyed by the portal job id it carries."""

    portal_job_id = models.BigIntegerField(unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20)
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

    class Meta:
        indexes = [models.Index(fields=["state"])]

    def __str__(self) -> str:
        return f"sim job {self.pk} (portal #{self.portal_job_id})"
