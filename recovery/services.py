"""Checkpoint recovery's one write path: the nightly run (snapshot, replicate, settle, expire) and restores.

Two kinds of snapshot, per team and night:

- an object replica: every checkpoint file of the team's jobs on the artifact store, copied into
  RECOVERY_REPLICA (S3) under `<team>/checkpoints-<stamp>/<job id>/checkpoints/...`;
- a volume snapshot (Kubernetes, K8S_SNAPSHOT_CLASS set): a VolumeSnapshot of the team's checkpoint claim.

Every attempt is a row; one that fails keeps its error and the team gets a new attempt the next night.
A restore puts one job's checkpoints back (files into the store, or a claim made from the snapshot),
with the job held while it runs and released to wait again afterwards, or left as it was on failure.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from artifacts import services as artifact_services
from artifacts.layout import team_prefix
from artifacts.stores import ArtifactStore, StoreError, open_store
from cluster.backends import get_backend
from cluster.backends.base import BackendError, ClusterBackend
from cluster.backends.hybrid import HybridBackend
from cluster.backends.kubernetes.backend import KubernetesBackend
from cluster.backends.kubernetes.manifests import CHECKPOINT_CLAIM_ENV
from cluster.backends.kubernetes.snapshots import SnapshotError, VolumeSnapshots
from jobs import services as job_services
from jobs.models import Job
from jobs.states import WAITING, JobState, PendingReason
from portal.env import env_secret
from portal.models import Team
from portal.permissions import is_operator
from portal.states import move
from recovery import layout
from recovery.layout import RecoveryInputError, ReplicaLayout
from recovery.models import (
    RESTORE_TRANSITIONS,
    SNAPSHOT_TRANSITIONS,
    Restore,
    RestoreState,
    Snapshot,
    SnapshotKind,
    SnapshotState,
)

__all__ = ["RecoveryError", "RecoveryForbidden", "RecoveryInputError"]
log = logging.getLogger(__name__)
STUCK_RESTORE = timedelta(hours=1)  # a restore still running after this was cut short (its worker died)


class RecoveryError(Exception):
    """A snapshot or restore could not be done; the message says what and why."""


class RecoveryForbidden(Exception):
    """Only operators take snapshots and restore them."""


# --- where snapshots go ---------------------------------------------------------------------------------


def replica() -> ArtifactStore | None:
    """The object replica (RECOVERY_REPLICA), or None when none is set."""
    if not settings.RECOVERY_REPLICA:
        return None
    return open_store(
        settings.RECOVERY_REPLICA,
        endpoint_url=settings.RECOVERY_S3_ENDPOINT_URL,
        region=settings.RECOVERY_S3_REGION,
        key_id=env_secret("RECOVERY_S3_ACCESS_KEY_ID"),
        key=env_secret("RECOVERY_S3_SECRET_ACCESS_KEY"),
    )


def volume_snapshots(backend: ClusterBackend | None = None) -> VolumeSnapshots | None:
    """The snapshot calls when the grid is Kubernetes (alone or beside Slurm) with checkpoint claims and
    K8S_SNAPSHOT_CLASS set, else None."""
    if not settings.K8S_SNAPSHOT_CLASS or settings.K8S_CHECKPOINT_VOLUME != "pvc":
        return None
    backend = backend or get_backend()
    if isinstance(backend, HybridBackend):  # Slurm and Kubernetes on the same nodes: Kubernetes' claims
        backend = backend.kubernetes
    if not isinstance(backend, KubernetesBackend):
        return None
    return VolumeSnapshots(backend.api, backend.options.manifest)


# --- the nightly run ---------------------------------------------------------------------------------------


@dataclass
class NightReport:
    """What one nightly run did, by snapshot id."""

    taken: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"taken": len(self.taken), "ready": len(self.ready), "failed": len(self.failed), "deleted": len(self.deleted)}


def nightly(now: datetime | None = None, backend: ClusterBackend | None = None, wait_s: float | None = None) -> NightReport:
    """Settle earlier snapshots, take tonight's for every team, wait for the volume snapshots, delete expired ones."""
    now, report = now or timezone.now(), NightReport()
    volumes, volumes_error = _open_volumes(backend)
    target, target_error = _open_replica()
    settle(volumes, report, now)
    waiting: list[Snapshot] = []
    for team in Team.objects.order_by("slug"):
        if target is not None or target_error:
            _replicate(team, target, now, report, target_error)
        if volumes is not None:
            waiting.extend(_snapshot_volume(team, volumes, now, report))
        elif volumes_error:  # recorded for every team, so the console shows why none was taken
            row = _new_row(team, SnapshotKind.VOLUME, layout.snapshot_name(now), "", now)
            if row is not None:
                report.taken.append(row.pk)
                _finish(row, SnapshotState.FAILED, report, now, error=volumes_error)
    if volumes is not None and waiting:
        _wait(volumes, waiting, settings.RECOVERY_SNAPSHOT_WAIT_S if wait_s is None else wait_s, report, now)
    report.deleted = expire(now, volumes=volumes, target=target)
    log.info("checkpoint recovery: %s", report.counts())
    return report


def _open_volumes(backend: ClusterBackend | None) -> tuple[VolumeSnapshots | None, str]:
    try:
        return volume_snapshots(backend), ""
    except BackendError as exc:
        return None, f"cannot reach Kubernetes to take the snapshot: {exc}"[:2000]


def _open_replica() -> tuple[ArtifactStore | None, str]:
    if not artifact_services.configured():
        return None, ""
    try:
        return replica(), ""
    except StoreError as exc:
        return None, f"cannot open RECOVERY_REPLICA: {exc}"[:2000]


def _new_row(team: Team, kind: str, name: str, location: str, now: datetime) -> Snapshot | None:
    """Tonight's row, or None when this night's snapshot of this kind exists already (a repeated run)."""
    row, created = Snapshot.objects.get_or_create(
        team=team, kind=kind, name=name,
        defaults={"location": location, "taken_at": now, "expires_at": layout.expires_at(now, settings.RECOVERY_RETENTION_DAYS)},
    )  # fmt: skip
    return row if created else None


def _finish(row: Snapshot, to: str, report: NightReport, now: datetime, **fields: Any) -> None:
    extra: dict[str, Any] = {"ready_at": now} if to == SnapshotState.READY else {}
    if move(Snapshot, row.pk, to, SNAPSHOT_TRANSITIONS, **extra, **fields) is not None:
        (report.ready if to == SnapshotState.READY else report.failed).append(row.pk)
        if to == SnapshotState.FAILED:
            log.warning("checkpoint snapshot #%s (%s of team %s) failed: %s", row.pk, row.name, row.team_id, fields.get("error"))


def _replicate(team: Team, target: ArtifactStore | None, now: datetime, report: NightReport, failure: str = "") -> None:
    """Copy every checkpoint file of the team's jobs into tonight's replica; a failure removes what it copied."""
    name = layout.snapshot_name(now)
    where = ReplicaLayout(team.slug, name)
    try:
        files = [f for f in artifact_services.store().list(team_prefix(team.slug)) if layout.is_checkpoint(f.key, team.slug)]
    except StoreError as exc:
        files, failure = [], f"cannot list the team's checkpoints on the artifact store: {exc}"
    if not files and not failure:
        return  # nothing to keep: no row
    location = _url(target, where.prefix) if target is not None else settings.RECOVERY_REPLICA
    row = _new_row(team, SnapshotKind.REPLICA, name, location, now)
    if row is None:
        return
    report.taken.append(row.pk)
    if failure or target is None:
        return _finish(row, SnapshotState.FAILED, report, now, error=failure or "no replica")
    try:
        _copy_all([(f.key, where.replica_key(f.key)) for f in files], artifact_services.store(), target)
    except StoreError as exc:
        return _finish(row, SnapshotState.FAILED, report, now, error=f"copying to the replica failed: {exc}"[:2000])
    jobs = sorted({layout.job_of(f.key) for f in files})
    _finish(row, SnapshotState.READY, report, now, size_bytes=sum(f.size for f in files), files=len(files), job_ids=jobs)


def _url(target: ArtifactStore, key: str) -> str:
    try:
        return target.location(key)
    except NotImplementedError:
        return key


def _copy_all(pairs: list[tuple[str, str]], source: ArtifactStore, dest: ArtifactStore) -> None:
    """Copy each (source key, destination key); on any failure delete what this call wrote, then raise."""
    written: list[str] = []
    try:
        for key, to in pairs:
            with contextlib.closing(source.open(key)) as data:
                dest.put(to, data)
            written.append(to)
    except StoreError:
        for key in written:
            with contextlib.suppress(StoreError):
                dest.delete(key)
        raise


def _snapshot_volume(team: Team, volumes: VolumeSnapshots, now: datetime, report: NightReport) -> list[Snapshot]:
    """Take tonight's VolumeSnapshot of the team's claim (teams without one have nothing to snapshot)."""
    try:
        if not volumes.claim_exists(team.slug):
            return []
    except BackendError as exc:
        log.warning("checkpoint claim of team %s: %s", team.slug, exc)
    name = layout.snapshot_name(now)
    row = _new_row(team, SnapshotKind.VOLUME, name, volumes.namespace(team.slug), now)
    if row is None:
        return []
    report.taken.append(row.pk)
    try:
        status = volumes.create(team.slug, name, settings.K8S_SNAPSHOT_CLASS)
    except BackendError as exc:
        _finish(row, SnapshotState.FAILED, report, now, error=str(exc)[:2000])
        return []
    if status.error:
        _finish(row, SnapshotState.FAILED, report, now, error=status.error)
        return []
    if status.ready:
        _finish(row, SnapshotState.READY, report, now, size_bytes=status.size_bytes)
        return []
    return [row]


def _wait(volumes: VolumeSnapshots, rows: list[Snapshot], wait_s: float, report: NightReport, now: datetime) -> None:
    """Wait for tonight's snapshots to be ready; one still not ready stays `taking` and is settled next night."""
    by_key = {(row.team.slug, row.name): row for row in rows}
    try:
        found = volumes.wait(list(by_key), wait_s)
    except BackendError as exc:
        log.warning("waiting for checkpoint snapshots: %s; settled next night", exc)
        return
    for key, status in found.items():
        _settle_volume(by_key[key], status, report, now, final=False)


def _settle_volume(row: Snapshot, status: Any, report: NightReport, now: datetime, *, final: bool) -> None:
    if status is None:
        _finish(row, SnapshotState.FAILED, report, now, error=f"VolumeSnapshot {row.location}/{row.name} is gone")
    elif status.error:
        _finish(row, SnapshotState.FAILED, report, now, error=status.error)
    elif status.ready:
        _finish(row, SnapshotState.READY, report, now, size_bytes=status.size_bytes)
    elif final:
        _finish(row, SnapshotState.FAILED, report, now, error="never became ready to use (status.readyToUse); a new one is taken")


def settle(volumes: VolumeSnapshots | None, report: NightReport, now: datetime) -> None:
    """Snapshots earlier runs left `taking`, and restores cut short: each is decided now."""
    for row in Snapshot.objects.filter(state=SnapshotState.TAKING, taken_at__lt=now).select_related("team"):
        if row.kind == SnapshotKind.REPLICA:  # the run copying it stopped part-way
            _finish(row, SnapshotState.FAILED, report, now, error="the run copying it stopped before it finished")
        elif volumes is None:
            _finish(
                row, SnapshotState.FAILED, report, now, error="no Kubernetes snapshot access to check it (K8S_SNAPSHOT_CLASS)"
            )
        else:
            try:
                status = volumes.get(row.team.slug, row.name)
            except BackendError as exc:
                log.warning("checking snapshot %s: %s", row.name, exc)
                continue
            _settle_volume(row, status, report, now, final=True)
    for restore in Restore.objects.filter(state=RestoreState.RESTORING, requested_at__lt=now - STUCK_RESTORE):
        _fail_restore(restore, "the restore stopped before it finished (its worker ended)", actor="system")


# --- retention -------------------------------------------------------------------------------------------


def expired(now: datetime) -> QuerySet[Snapshot]:
    gone = [SnapshotState.READY, SnapshotState.FAILED, SnapshotState.DELETING]
    return Snapshot.objects.filter(state__in=gone, expires_at__lte=now).select_related("team").order_by("expires_at", "pk")


def expire(
    now: datetime,
    *,
    volumes: VolumeSnapshots | None = None,
    target: ArtifactStore | None = None,
    batch: int | None = None,
    max_batches: int = 100,
) -> list[int]:
    """Delete snapshots and replicas past RECOVERY_RETENTION_DAYS, a batch at a time; returns the rows deleted.

    A row is claimed (`deleting`) before its objects go, so two runs never delete one twice; one whose
    deletion fails keeps its error and is tried again on the next run."""
    batch, deleted, tried = batch or settings.RECOVERY_BATCH, [], set[int]()
    for _ in range(max_batches):
        rows = list(expired(now).exclude(pk__in=tried)[:batch])
        for row in rows:
            tried.add(row.pk)
            if (
                row.state != SnapshotState.DELETING
                and move(Snapshot, row.pk, SnapshotState.DELETING, SNAPSHOT_TRANSITIONS) is None
            ):
                continue  # another run has it
            try:
                _delete_objects(row, volumes, target)
            except (StoreError, BackendError, RecoveryError) as exc:
                Snapshot.objects.filter(pk=row.pk).update(error=f"deleting: {exc}"[:2000])
                continue
            if move(Snapshot, row.pk, SnapshotState.DELETED, SNAPSHOT_TRANSITIONS, deleted_at=now) is not None:
                deleted.append(row.pk)
        if len(rows) < batch:
            break
    return deleted


def _delete_objects(row: Snapshot, volumes: VolumeSnapshots | None, target: ArtifactStore | None) -> None:
    if row.kind == SnapshotKind.REPLICA:
        if target is None:
            raise RecoveryError("RECOVERY_REPLICA is not set: the replica cannot be reached to delete it")
        target.delete_prefix(ReplicaLayout(row.team.slug, row.name).prefix)
    else:
        if volumes is None:
            raise RecoveryError("no Kubernetes snapshot access (K8S_SNAPSHOT_CLASS) to delete it")
        volumes.delete(row.team.slug, row.name)


# --- restore ---------------------------------------------------------------------------------------------


def restore(user: Any, snapshot_id: object, job_id: object, backend: ClusterBackend | None = None) -> Restore:
    """Put one job's checkpoints back from a snapshot and let the job wait to run again, resuming from them.

    Operators only. Idempotent: the same (snapshot, job) restored again returns the first restore.
    All or nothing: while it runs the job is held (admission leaves it alone); on failure the files it
    copied are deleted and the job waits as before, with the error on the restore's row."""
    if not is_operator(user):
        raise RecoveryForbidden("only operators restore checkpoints")
    snapshot, job = _restore_input(snapshot_id, job_id)
    done = Restore.objects.filter(snapshot=snapshot, job=job, state=RestoreState.DONE).first()
    if done is not None:
        return done
    if job.state not in WAITING:
        raise RecoveryInputError(
            "job", f"#{job.pk} is {job.state}; a restore needs a job that waits (pending or requeued): wait until it is requeued"
        )
    row = _claim_restore(snapshot, job, user.username)
    held = job_services.transition(
        job.pk, JobState.HELD, actor=user.username, why=f"restoring its checkpoints from snapshot #{snapshot.pk}",
        reason=PendingReason.NONE, reason_detail=f"held while its checkpoints are restored from {snapshot.name}",
    )  # fmt: skip
    if not held:
        _fail_restore(row, "the job changed state before the restore began", actor=user.username, release=False)
        raise RecoveryInputError("job", f"#{job.pk} changed state before the restore began; try again")
    try:
        files, claim = _put_back(snapshot, job, backend)
    except (StoreError, BackendError, SnapshotError, RecoveryError) as exc:
        _fail_restore(row, str(exc), actor=user.username)
        raise RecoveryError(f"restore of job #{job.pk} from snapshot #{snapshot.pk} failed and changed nothing: {exc}") from exc
    move(Restore, row.pk, RestoreState.DONE, RESTORE_TRANSITIONS, files=files, claim=claim, finished_at=timezone.now())
    job_services.transition(
        job.pk, JobState.PENDING, actor=user.username,
        why=f"checkpoints restored from snapshot #{snapshot.pk} ({snapshot.name}); it resumes from them",
        reason=PendingReason.NEW, reason_detail="",
    )  # fmt: skip
    row.refresh_from_db()
    return row


def _restore_input(snapshot_id: object, job_id: object) -> tuple[Snapshot, Job]:
    sid, jid = layout.positive_id(snapshot_id, "snapshot"), layout.positive_id(job_id, "job")
    snapshot = Snapshot.objects.select_related("team").filter(pk=sid).first()
    if snapshot is None:
        raise RecoveryInputError("snapshot", f"there is no snapshot #{sid}")
    if snapshot.state != SnapshotState.READY:
        raise RecoveryInputError("snapshot", f"#{sid} is {snapshot.state}; only a ready snapshot can be restored")
    job = Job.objects.select_related("team", "owner").filter(pk=jid).first()
    if job is None:
        raise RecoveryInputError("job", f"there is no job #{jid}")
    if job.team_id != snapshot.team_id:
        raise RecoveryInputError(
            "job", f"#{jid} is team {job.team.slug}'s; snapshot #{sid} holds team {snapshot.team.slug}'s checkpoints"
        )
    if snapshot.kind == SnapshotKind.REPLICA and jid not in snapshot.job_ids:
        held = ", ".join(f"#{j}" for j in snapshot.job_ids[:20]) or "none"
        raise RecoveryInputError("job", f"snapshot #{sid} holds no checkpoints of job #{jid} (it holds {held})")
    if snapshot.kind == SnapshotKind.VOLUME and not job.checkpoint_dir:
        raise RecoveryInputError("job", f"#{jid} has no checkpoint_dir, where the restored claim would be mounted")
    return snapshot, job


def _claim_restore(snapshot: Snapshot, job: Job, actor: str) -> Restore:
    row, created = Restore.objects.get_or_create(snapshot=snapshot, job=job, defaults={"requested_by": actor})
    if created:
        return row
    now = timezone.now()
    if move(Restore, row.pk, RestoreState.RESTORING, RESTORE_TRANSITIONS, requested_by=actor, requested_at=now, error="") is None:
        raise RecoveryInputError("job", f"a restore of #{job.pk} from snapshot #{snapshot.pk} is already running")
    return row


def _fail_restore(row: Restore, error: str, *, actor: str, release: bool = True) -> None:
    move(Restore, row.pk, RestoreState.FAILED, RESTORE_TRANSITIONS, error=error[:2000], finished_at=timezone.now())
    if release:
        job_services.transition(
            row.job_id, JobState.PENDING, actor=actor, why=f"restore from snapshot #{row.snapshot_id} failed: {error}"[:300],
            reason=PendingReason.NEW, reason_detail="",
        )  # fmt: skip


def _put_back(snapshot: Snapshot, job: Job, backend: ClusterBackend | None) -> tuple[int, str]:
    """(files copied, claim made): the job's checkpoint files into the store, or a claim from the volume snapshot."""
    if snapshot.kind == SnapshotKind.VOLUME:
        volumes = volume_snapshots(backend)
        if volumes is None:
            raise RecoveryError("a volume snapshot is restored on the Kubernetes backend with K8S_SNAPSHOT_CLASS set")
        if not snapshot.size_bytes:
            raise RecoveryError(f"snapshot {snapshot.name} has no restore size recorded")
        return 0, volumes.restore_claim(job.team.slug, job.pk, snapshot.name, snapshot.size_bytes)
    source = replica()
    if source is None:
        raise RecoveryError("RECOVERY_REPLICA is not set: the replica cannot be read")
    prefix = ReplicaLayout(job.team.slug, snapshot.name).job_prefix(job.pk)
    files = source.list(prefix)
    if not files:
        raise RecoveryError(f"the replica holds no checkpoints of job #{job.pk} under {prefix}")
    dest = artifact_services.locations(job).checkpoints
    _copy_all([(f.key, dest + f.key[len(prefix) :]) for f in files], source, artifact_services.store())
    return len(files), ""


def job_environment(job: Job) -> dict[str, str]:
    """The claim a restored job mounts for its checkpoints (Kubernetes); only the portal may name one.

    Without K8S_SNAPSHOT_CLASS no claim is ever restored: no query on every dispatch then."""
    mine = {CHECKPOINT_CLAIM_ENV: ""} if CHECKPOINT_CLAIM_ENV in job.env else {}
    if not settings.K8S_SNAPSHOT_CLASS:
        return mine
    claim = (
        Restore.objects.filter(job_id=job.pk, state=RestoreState.DONE, snapshot__kind=SnapshotKind.VOLUME)
        .exclude(claim="")
        .order_by("-finished_at", "-pk")
        .values_list("claim", flat=True)
        .first()
    )
    return {CHECKPOINT_CLAIM_ENV: claim} if claim else mine


# --- the console -----------------------------------------------------------------------------------------


def listing(user: Any, limit: int = 200) -> tuple[list[Snapshot], list[Restore]]:
    """Snapshots not yet deleted, newest first, and the latest restores; operators only."""
    if not is_operator(user):
        raise RecoveryForbidden("only operators see checkpoint snapshots")
    snapshots = Snapshot.objects.exclude(state=SnapshotState.DELETED).select_related("team")[:limit]
    restores = Restore.objects.select_related("snapshot", "job")[:50]
    return list(snapshots), list(restores)
