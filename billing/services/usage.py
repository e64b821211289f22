"""Metering service: turns job events into usage records, idempotently.

Re-metering a job replaces its records in every month whose invoice is not finalised, and
leaves finalised months exactly as they were billed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from billing import metering, pricing
from billing.choices import InvoiceState
from billing.models import Invoice, UsageRecord
from billing.services.rates import all_rates
from cluster import services as cluster_services
from cluster.models import Pool
from jobs.models import Job, JobEvent
from jobs.states import HOLDS_GPUS, JobState


def job_history(job_id: int) -> list[metering.StateChange]:
    """The job's state changes; on admission, the pool it was admitted to (kept on the event, since a requeue clears Job.pool)."""
    rows = JobEvent.objects.filter(job_id=job_id).order_by("at", "id").values_list("at", "to_state", "pool")
    return [metering.StateChange(at, state, pool if state == JobState.ADMITTED else "") for at, state, pool in rows]


def finalised_months(team_id: int) -> set[date]:
    return set(Invoice.objects.filter(team_id=team_id, state=InvoiceState.FINALISED).values_list("month", flat=True))


def pool_kinds() -> dict[str, str]:
    return dict(Pool.objects.values_list("name", "kind"))


def usage_pieces(job: Job, now: datetime, rates: list[pricing.Rate]) -> list[metering.UsagePiece]:
    intervals = metering.run_intervals(job_history(job.pk), now=now, finished_at=job.finished_at)
    intervals = [i if i.pool else metering.RunInterval(i.start, i.end, job.pool) for i in intervals]
    return metering.meter(intervals, job.gpus, pricing.rate_changes(rates, job.gpu_model))


def meter_job(job_id: int, now: datetime | None = None, *, rates: list[pricing.Rate] | None = None) -> int:
    """Replace the job's usage records in open months with freshly metered ones; returns how many."""
    now = now or timezone.now()
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        return 0
    rates = all_rates() if rates is None else rates
    kinds = pool_kinds()
    still_holding = job.state in HOLDS_GPUS
    with transaction.atomic():
        closed = finalised_months(job.team_id)
        replaced = UsageRecord.objects.filter(job_id=job.pk).exclude(month__in=closed)
        busy = telemetry_busy_fraction(job.pk)
        if busy is None:
            busy = _busy_fraction(replaced)
        records = [
            _record(job, piece, kinds.get(piece.pool, ""), rates, still_holding and piece.end == now, busy)
            for piece in usage_pieces(job, now, rates)
            if piece.month not in closed
        ]
        replaced.delete()
        UsageRecord.objects.bulk_create(records, batch_size=500)
    return len(records)


def telemetry_busy_fraction(job_id: int) -> Decimal | None:
    """The share of the job's GPU samples that were busy (at or above IDLE_THRESHOLD), as the telemetry
    counted them so far (`cluster.JobEfficiency`); None when it has no samples of the job."""
    sums = cluster_services.idle_fractions([job_id]).get(job_id)
    if sums is None:
        return None
    idle, samples = sums
    return (Decimal(samples - idle) / Decimal(samples)).quantize(Decimal("0.000001"))


def _busy_fraction(records: QuerySet[UsageRecord]) -> Decimal | None:
    """How busy the job's GPUs were, as telemetry last said; kept across re-metering."""
    sums = records.aggregate(used=Sum("used_gpu_seconds"), held=Sum("gpu_seconds", filter=Q(used_gpu_seconds__isnull=False)))
    if not sums["used"] or not sums["held"]:
        return None
    return Decimal(sums["used"]) / Decimal(sums["held"])


def _record(
    job: Job, piece: metering.UsagePiece, kind: str, rates: list[pricing.Rate], is_open: bool, busy: Decimal | None
) -> UsageRecord:
    rate = pricing.find_rate(rates, job.gpu_model, kind, piece.pool, piece.start)
    used = (piece.gpu_seconds * busy).quantize(metering.MICROSECONDS) if busy is not None else None
    return UsageRecord(
        team_id=job.team_id, job_id=job.pk, month=piece.month, gpu_model=job.gpu_model, pool=piece.pool,
        pool_kind=kind, backend=job.backend, start=piece.start, end=piece.end, gpus=job.gpus,
        gpu_seconds=piece.gpu_seconds, used_gpu_seconds=used, rate_card_id=rate.card_id if rate else None, open=is_open,
    )  # fmt: skip


def meter_jobs(job_ids: Iterable[int], now: datetime | None = None) -> int:
    now = now or timezone.now()
    rates = all_rates()
    return sum(meter_job(job_id, now, rates=rates) for job_id in job_ids)


def jobs_active_between(start: datetime, end: datetime) -> set[int]:
    """Jobs that held GPUs at some moment in [start, end): admitted before the end, not done before the start."""
    admitted = JobEvent.objects.filter(to_state=JobState.ADMITTED, at__lt=end).values("job_id")
    touched_later = JobEvent.objects.filter(at__gte=start).values("job_id")
    ids = Job.objects.filter(Q(pk__in=touched_later) | Q(state__in=HOLDS_GPUS), pk__in=admitted).values_list("id", flat=True)
    return set(ids)


def meter_month(month: date, now: datetime | None = None) -> int:
    """Meter every job that held GPUs during the month (before its invoices are drafted)."""
    start, end = metering.month_bounds(month)
    return meter_jobs(sorted(jobs_active_between(start, end)), now)


def meter_recent(since: datetime, now: datetime | None = None) -> int:
    """Meter jobs that hold GPUs now or changed state since `since` (the periodic metering pass)."""
    ids = set(Job.objects.filter(Q(state__in=HOLDS_GPUS) | Q(state_changed_at__gte=since)).values_list("id", flat=True))
    return meter_jobs(sorted(ids), now)


def reprice_from(day: date, now: datetime | None = None) -> int:
    """After a rate change: re-meter jobs with usage on or after `day`, so their records use the new cards."""
    ids = UsageRecord.objects.filter(end__gt=metering.month_start(day).replace(day=day.day)).values_list("job_id", flat=True)
    return meter_jobs(sorted(set(ids)), now)


def record_utilisation(job_id: int, busy_fraction: float) -> int:
    """Store how busy the job's GPUs were (0..1, from telemetry) on its records in open months."""
    if not 0.0 <= busy_fraction <= 1.0:
        raise ValueError(f"busy_fraction: must be between 0 and 1, got {busy_fraction}")
    team_id = Job.objects.filter(pk=job_id).values_list("team_id", flat=True).first()
    if team_id is None:
        return 0
    updated = 0
    for record in UsageRecord.objects.filter(job_id=job_id).exclude(month__in=finalised_months(team_id)):
        used = (record.gpu_seconds * Decimal(str(busy_fraction))).quantize(metering.MICROSECONDS)
        updated += UsageRecord.objects.filter(pk=record.pk).update(used_gpu_seconds=used)
    return updated
