"""The artifact store's one write path: locations, what a job is told, downloads, uploads, retention, usage."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import IO, Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from artifacts import layout
from artifacts.layout import ArtifactInputError, JobLayout
from artifacts.models import JobArtifacts, TeamArtifacts
from artifacts.stores import ArtifactStore, StoreError, open_store
from billing.metering import month_of
from billing.services import storage as billing_storage
from jobs.models import Job
from jobs.states import TERMINAL
from portal.env import env_secret
from portal.models import Team
from portal.permissions import CHANGE, VIEW, is_operator

__all__ = ["ArtifactInputError", "StoreError"]


class NoStore(Exception):
    """No artifact store is configured (ARTIFACT_STORE is empty)."""


class ArtifactForbidden(Exception):
    """The user may see the object but not do this to it."""


@dataclass(frozen=True)
class ArtifactFile:
    """One of a job's files, by its path inside the job's location (`output/model.pt`)."""

    path: str
    size: int
    modified: datetime

    @property
    def area(self) -> str:
        return self.path.split("/", 1)[0]


@dataclass(frozen=True)
class Download:
    """How to hand a file over: a short pre-signed URL (S3), or its bytes (a path store)."""

    filename: str
    url: str | None = None
    stream: IO[bytes] | None = None


# --- the store ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _open(url: str, endpoint_url: str | None, region: str | None, key_id: str | None, key: str | None) -> ArtifactStore:
    return open_store(url, endpoint_url=endpoint_url, region=region, key_id=key_id, key=key)


def store() -> ArtifactStore:
    """The configured store (opened once per configuration), or NoStore."""
    url = settings.ARTIFACT_STORE
    if not url:
        raise NoStore("no artifact store is configured (ARTIFACT_STORE)")
    key_id, key = env_secret("ARTIFACT_S3_ACCESS_KEY_ID"), env_secret("ARTIFACT_S3_SECRET_ACCESS_KEY")
    return _open(url, settings.ARTIFACT_S3_ENDPOINT_URL, settings.ARTIFACT_S3_REGION, key_id, key)


def configured() -> bool:
    return bool(settings.ARTIFACT_STORE)


# --- a job's locations and what the job is told -----------------------------------------------------


def locations(job: Job) -> JobArtifacts:
    """The job's row of locations, made on first use and never moved afterwards (a requeued job finds its checkpoints)."""
    row = JobArtifacts.objects.filter(job_id=job.pk).first()
    if row is not None:
        return row
    where = JobLayout(job.team.slug, job.pk)
    row, _ = JobArtifacts.objects.get_or_create(
        job_id=job.pk,
        defaults={
            "team_id": job.team_id,
            "store": settings.ARTIFACT_STORE,
            "output": where.output,
            "checkpoints": where.checkpoints,
        },
    )
    return row


def job_environment(job: Job) -> dict[str, str]:
    """What a job finds in its environment about where its files go; empty without a store.

    A path store (the same path mounted on the nodes) gives directories to write to; S3 gives the
    locations as URLs and the API path that hands out pre-signed upload URLs for them.
    """
    if not configured():
        return {}
    row, target = locations(job), store()
    interval = job.checkpoint_interval_s or settings.ARTIFACT_CHECKPOINT_INTERVAL_S
    env = {"GRID_ARTIFACT_STORE": target.kind, "GRID_CHECKPOINT_INTERVAL_S": str(interval)}
    if target.kind == "file":
        env |= {"GRID_OUTPUT_DIR": target.location(row.output), "GRID_CHECKPOINT_DIR": target.location(row.checkpoints)}
    else:
        env |= {
            "GRID_OUTPUT_URL": target.location(row.output),
            "GRID_CHECKPOINT_URL": target.location(row.checkpoints),
            "GRID_ARTIFACT_UPLOAD_API": f"/api/v1/artifacts/jobs/{job.pk}/uploads/",
        }
        if settings.ARTIFACT_S3_ENDPOINT_URL:
            env["GRID_ARTIFACT_ENDPOINT_URL"] = settings.ARTIFACT_S3_ENDPOINT_URL
    return env


# --- browsing, downloads, uploads -------------------------------------------------------------------


def visible_job(user: Any, job_id: int) -> Job | None:
    """The job if `user` may see it (the job's own rule), else None: callers answer 404 either way."""
    return Job.objects.visible_to(user).select_related("team").filter(pk=job_id).first()


def list_files(job: Job) -> list[ArtifactFile]:
    """The job's files, outputs and checkpoints, by path; none once retention purged them or without a store."""
    if not configured():
        return []
    prefix = JobLayout(job.team.slug, job.pk).prefix
    return [ArtifactFile(f.key[len(prefix) :], f.size, f.modified) for f in store().list(prefix)]


def purged_at(job: Job) -> datetime | None:
    """When retention deleted the job's files, if it did."""
    if not configured():
        return None
    found: datetime | None = JobArtifacts.objects.filter(job_id=job.pk).values_list("purged_at", flat=True).first()
    return found


def download(job: Job, path: str) -> Download:
    """The file at `path` in the job's location. Call only after the job's access check."""
    path = layout.clean_path(path)
    key = JobLayout(job.team.slug, job.pk).prefix + path
    target, filename = store(), path.rsplit("/", 1)[-1]
    if not target.exists(key):
        raise StoreError(f"no file {path!r} in job #{job.pk}'s artifacts", retryable=False)
    url = target.download_url(key, settings.ARTIFACT_DOWNLOAD_URL_TTL_S, filename)
    return Download(filename, url=url) if url else Download(filename, stream=target.open(key))


def may_upload(user: Any, job: Job) -> bool:
    """The job's owner, its team's lead and operators: those who may act on the job."""
    return Job.objects.restrict(user, CHANGE).filter(pk=job.pk).exists()


def upload_url(user: Any, job: Job, path: str, size: object) -> dict[str, Any]:
    """A pre-signed URL to PUT one file of `size` bytes at `path` in the job's location."""
    path = layout.clean_path(path)
    size = layout.check_upload_size(size, settings.ARTIFACT_MAX_UPLOAD_BYTES)
    if not may_upload(user, job):
        raise ArtifactForbidden("only the job's owner, its team's lead or an operator may upload to its artifacts")
    target = store()
    key = JobLayout(job.team.slug, job.pk).prefix + path
    url = target.upload_url(key, size, settings.ARTIFACT_UPLOAD_URL_TTL_S)
    if url is None:
        raise ArtifactInputError("path", "this store is a mounted path: the job writes to GRID_OUTPUT_DIR or GRID_CHECKPOINT_DIR")
    locations(job)
    expires = timezone.now() + timedelta(seconds=settings.ARTIFACT_UPLOAD_URL_TTL_S)
    return {"path": path, "url": url, "method": "PUT", "headers": {"Content-Length": str(size)}, "expires_at": expires}


# --- retention ----------------------------------------------------------------------------------------


def policy(team: Team) -> TeamArtifacts:
    row, _ = TeamArtifacts.objects.get_or_create(team=team)
    return row


def may_set_retention(user: Any, team: Team) -> bool:
    return is_operator(user) or team.pk in getattr(user, "lead_team_ids", ())


def set_retention(user: Any, team: Team, days: object) -> TeamArtifacts:
    """Set the team's retention (days after a job ends; None: the site default). A team lead or an operator."""
    value = layout.check_retention(days)
    if not may_set_retention(user, team):  # asked before the row is made: a refused call changes nothing
        raise ArtifactForbidden("only the team's lead or an operator may set its retention")
    row = policy(team)
    if not TeamArtifacts.objects.restrict(user, CHANGE).filter(pk=row.pk).exists():
        raise ArtifactForbidden("only the team's lead or an operator may set its retention")
    TeamArtifacts.objects.filter(pk=row.pk).update(retention_days=value)
    row.retention_days = value
    return row


def retention_days(row: TeamArtifacts | None) -> int | None:
    """The team's retention in days, its own or the site's; None: kept forever."""
    if row is not None and row.retention_days:
        return row.retention_days
    return settings.ARTIFACT_RETENTION_DAYS or None


def expired(now: datetime) -> QuerySet[Job]:
    """Ended jobs past their team's retention whose files are not purged yet, oldest first."""
    own: dict[int, int] = {
        team_id: days
        for team_id, days in TeamArtifacts.objects.filter(retention_days__isnull=False).values_list("team_id", "retention_days")
        if days
    }
    matches = Q()
    for team_id, days in own.items():
        matches |= Q(team_id=team_id, finished_at__lt=layout.expired_before(now, days))
    if settings.ARTIFACT_RETENTION_DAYS:
        cutoff = layout.expired_before(now, settings.ARTIFACT_RETENTION_DAYS)
        matches |= ~Q(team_id__in=list(own)) & Q(finished_at__lt=cutoff)
    if not matches:
        return Job.objects.none()
    jobs = Job.objects.filter(state__in=list(TERMINAL)).filter(matches).exclude(artifacts__purged_at__isnull=False)
    return jobs.select_related("team").order_by("finished_at", "pk")


def purge_expired(now: datetime | None = None, batch: int | None = None, max_batches: int = 100) -> int:
    """Delete the files of expired jobs, a batch at a time; returns how many jobs' files went.

    Every ended job counts, also one whose location row was never made (its files may still be
    there, written through the mounted path); each purge is recorded on the job's row, so no job is
    purged twice and the job page can say where its files went.
    """
    if not configured():
        return 0
    now, batch = now or timezone.now(), batch or settings.ARTIFACT_PURGE_BATCH
    purged = 0
    for _ in range(max_batches):
        jobs = list(expired(now)[:batch])
        for job in jobs:
            count = store().delete_prefix(JobLayout(job.team.slug, job.pk).prefix)
            row = locations(job)
            purged += JobArtifacts.objects.filter(pk=row.pk, purged_at__isnull=True).update(purged_at=now, purged_files=count)
        if len(jobs) < batch:
            break
    return purged


# --- usage ------------------------------------------------------------------------------------------


def measure_usage(now: datetime | None = None) -> dict[int, int]:
    """Measure the bytes each team keeps on the store and record them; returns {team id: bytes}.

    Each pass also bills the span since the team's last pass at the bytes measured then (billing's
    storage usage), once: the row moves on by a conditional UPDATE on its last measurement time, so a
    second pass running at the same moment records nothing twice."""
    if not configured():
        return {}
    now, target = now or timezone.now(), store()
    measured = {}
    for team in Team.objects.all():  # every team: files written through a mounted path count as much as uploads
        files = target.list(layout.team_prefix(team.slug))
        measured[team.pk] = sum(f.size for f in files)
        _record_measurement(team, measured[team.pk], len(files), now)
    return measured


def _record_measurement(team: Team, used: int, count: int, now: datetime) -> None:
    row, _ = TeamArtifacts.objects.get_or_create(team=team)
    with transaction.atomic():
        moved = TeamArtifacts.objects.filter(pk=row.pk, measured_at=row.measured_at).update(
            usage_bytes=used, usage_files=count, measured_at=now
        )
        if moved and row.measured_at is not None and now > row.measured_at:
            billing_storage.record(team.pk, row.usage_bytes, row.measured_at, now)


@dataclass(frozen=True)
class Usage:
    """A team's figure for its pages: bytes kept, when measured, retention, and, where a storage rate is set
    (billing's storage rate cards), the rate, the monthly cost at this size and this month's storage so far."""

    usage_bytes: int
    usage_files: int
    measured_at: datetime | None
    retention_days: int | None
    rate_per_gb_month: Decimal | None
    monthly_cost: Decimal | None
    month_gb_months: Decimal
    month_cost: Decimal


def usage(user: Any, team: Team) -> Usage | None:
    """The team's usage figure, if `user` may see it."""
    if not (is_operator(user) or team.pk in getattr(user, "team_ids", ())):
        return None
    row = TeamArtifacts.objects.restrict(user, VIEW).filter(team=team).first()
    now = timezone.now()
    card = billing_storage.rate_on(now.date())
    rate = Decimal(card.per_gb_month) if card is not None else None
    used = row.usage_bytes if row else 0
    so_far = billing_storage.month_so_far(team.pk, month_of(now))
    return Usage(
        usage_bytes=used,
        usage_files=row.usage_files if row else 0,
        measured_at=row.measured_at if row else None,
        retention_days=retention_days(row),
        rate_per_gb_month=rate,
        monthly_cost=layout.monthly_storage_cost(used, rate) if rate is not None else None,
        month_gb_months=so_far.gb_months,
        month_cost=so_far.amount,
    )
