"""Checkpoint snapshots (a volume snapshot or an object replica per team and night) and the restores made from them."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from jobs.models import Job
from portal.models import Team
from portal.permissions import RestrictedModel
from portal.states import Transitions


class SnapshotKind(models.TextChoices):
    VOLUME = "volume-snapshot", "Volume snapshot"
    REPLICA = "object-replica", "Object replica"


class SnapshotState(models.TextChoices):
    TAKING = "taking", "Taking"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"
    DELETING = "deleting", "Deleting"
    DELETED = "deleted", "Deleted"


S = SnapshotState
SNAPSHOT_TRANSITIONS = Transitions(
    {
        S.TAKING: {S.READY, S.FAILED},
        S.READY: {S.DELETING},
        S.FAILED: {S.DELETING},
        S.DELETING: {S.DELETED},
        S.DELETED: set(),
    }
)


class RestoreState(models.TextChoices):
    RESTORING = "restoring", "Restoring"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


R = RestoreState
RESTORE_TRANSITIONS = Transitions({R.RESTORING: {R.DONE, R.FAILED}, R.FAILED: {R.RESTORING}, R.DONE: set()})


class Snapshot(RestrictedModel):
    """One night's copy of one team's checkpoints: a VolumeSnapshot of its claim, or an object replica.

    Operators only (the default rule): restores are theirs, and the rows name every team's jobs.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20, choices=SnapshotKind.choices)
    name = models.CharField(max_length=253, help_text="The VolumeSnapshot's name, or the replica's key prefix.")
    location = models.CharField(max_length=500, help_text="The namespace, or the replica's s3:// URL.")
    state = models.CharField(max_length=10, choices=SnapshotState.choices, default=SnapshotState.TAKING)
    taken_at = models.DateTimeField(default=timezone.now)
    ready_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True, help_text="Bytes copied, or the snapshot's restore size.")
    files = models.PositiveIntegerField(null=True, blank=True, help_text="Objects a replica copied.")
    job_ids = models.JSONField(default=list, blank=True, help_text="Jobs whose checkpoints a replica holds.")
    error = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "kind", "name"], name="recovery_snapshot_once")]
        indexes = [models.Index(fields=["state", "expires_at"], name="recovery_snapshot_expiry")]
        ordering = ["-taken_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.name} of {self.team_id}"


class Restore(RestrictedModel):
    """A job's checkpoints put back from a snapshot, once per (snapshot, job): done, or failed with why."""

    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="restores")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="+")
    state = models.CharField(max_length=10, choices=RestoreState.choices, default=RestoreState.RESTORING)
    requested_by = models.CharField(max_length=150)
    requested_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    claim = models.CharField(max_length=253, blank=True, help_text="The claim made from a volume snapshot.")
    files = models.PositiveIntegerField(default=0, help_text="Objects copied back.")
    error = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["snapshot", "job"], name="recovery_restore_once")]
        ordering = ["-requested_at", "-id"]

    def __str__(self) -> str:
        return f"restore of job #{self.job_id} from snapshot #{self.snapshot_id}"
