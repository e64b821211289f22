"""What a job's page and websocket show: state, events, log tail and per-GPU telemetry."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from cluster.models import JobEfficiency, SafeguardEvent
from cluster.simulator.model import GpuSample
from cluster.telemetry import TelemetryUnavailable, get_telemetry
from cluster.telemetry.convert import present
from jobs import services
from jobs.models import Job, JobEvent
from jobs.spec import format_walltime
from jobs.states import TERMINAL, PendingReason
from portal.charts import Point, line_figure

WINDOW_S = 300
MAX_POINTS = 300
LOG_TAIL = 200
# (sample attribute, chart title, unit, fixed y range)
METRICS: tuple[tuple[str, str, str, tuple[float, float] | None], ...] = (
    ("utilization", "GPU utilisation", "%", (0, 100)),
    ("temperature_c", "GPU temperature", "°C", None),
    ("fb_used_mib", "GPU memory used", "MiB", None),
)


def job_state(job: Job) -> dict[str, Any]:
    return {
        "id": job.pk,
        "state": job.state,
        "state_label": job.get_state_display(),
        "reason": job.reason,
        "reason_label": PendingReason(job.reason).label if job.reason in PendingReason.values else job.reason,
        "reason_detail": job.reason_detail,
        "position": job.team_position,
        "pool_position": job.pool_position,
        "estimated_start": _iso(job.estimated_start),
        "estimated_start_range": [_iso(m) for m in start_range(job.estimated_start)] if job.estimated_start else None,
        "exit_code": job.exit_code,
        "pool": job.pool,
        "nodes": sorted(job.placement),
        "submitted_at": _iso(job.submitted_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "walltime": format_walltime(job.walltime_s),
        "ended": job.state in TERMINAL,
    }


def start_range(estimated: datetime, now: datetime | None = None) -> tuple[datetime, datetime]:
    """Where the start will likely fall: the estimate's wait from now, scaled by the 10th and 90th
    percentile of actual over estimated wait measured in the trace replay (START_ESTIMATE_RATIO_LOW/HIGH,
    docs/scheduler.md). An estimate is a point; this is what it is worth."""
    now = now or timezone.now()
    wait = max(0.0, (estimated - now).total_seconds())
    low, high = settings.START_ESTIMATE_RATIO_LOW, settings.START_ESTIMATE_RATIO_HIGH
    return now + timedelta(seconds=wait * low), now + timedelta(seconds=wait * high)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def events(job: Job, after_id: int = 0) -> list[dict[str, Any]]:
    return [event_data(e) for e in JobEvent.objects.filter(job=job, pk__gt=after_id).order_by("id")]


def event_data(e: JobEvent) -> dict[str, Any]:
    return {"id": e.pk, "at": e.at.isoformat(), "from": e.from_state, "to": e.to_state, "actor": e.actor, "reason": e.reason}


def _label(sample: GpuSample) -> str:
    return f"{sample.hostname}/gpu{sample.gpu}"


def gpu_history(job: Job, now: datetime | None = None) -> dict[str, dict[str, list[Point]]]:
    """Per metric, per GPU label: the job's telemetry over the last few minutes it ran (a range query)."""
    out: dict[str, dict[str, list[Point]]] = {m: defaultdict(list) for m, *_ in METRICS}
    if not job.placement or job.started_at is None:
        return out
    end = job.finished_at or now or timezone.now()
    start = max(job.started_at, end - timedelta(seconds=WINDOW_S))
    step = max(2.0, (end - start).total_seconds() / MAX_POINTS)
    for moment, samples in get_telemetry().history(sorted(job.placement), start, end, step):
        for sample in samples:
            if sample.portal_job_id == job.pk:
                for metric, *_ in METRICS:
                    value = present(getattr(sample, metric))
                    if value is not None:
                        out[metric][_label(sample)].append((moment.isoformat(), value))
    return out


def history_or_stale(job: Job) -> tuple[dict[str, dict[str, list[Point]]], bool]:
    """The history, or empty charts marked stale when telemetry cannot be read: the page still opens."""
    try:
        return gpu_history(job), False
    except TelemetryUnavailable:
        return {m: {} for m, *_ in METRICS}, True


def gpu_now(job: Job) -> dict[str, Any] | None:
    """This second's samples, read by the page's own socket; None when the telemetry cycle pushes them instead."""
    if settings.TELEMETRY_PUSH or not job.placement or job.state in TERMINAL or job.started_at is None:
        return None
    now = timezone.now()
    try:
        samples = [s for s in get_telemetry().samples(sorted(job.placement), now) if s.portal_job_id == job.pk]
    except TelemetryUnavailable:
        return {"t": now.isoformat(), "stale": True, "values": {}}
    if not samples:
        return None
    return {"t": now.isoformat(), "stale": False, "values": {m: {_label(s): getattr(s, m) for s in samples} for m, *_ in METRICS}}


def efficiency(job: Job) -> dict[str, Any] | None:
    """The job's GPU efficiency (final once it ended) and the idle policy's decision, if any."""
    return efficiency_data(JobEfficiency.objects.filter(portal_job_id=job.pk).first())


def efficiency_data(row: JobEfficiency | None) -> dict[str, Any] | None:
    if row is None:
        return None
    mean = row.mean_utilization if row.final else (round(row.utilization_sum / row.samples, 1) if row.samples else None)
    idle = row.idle_fraction if row.final else (round(row.idle_samples / row.samples, 3) if row.samples else None)
    return {
        "final": row.final,
        "mean_utilization": mean,
        "memory_peak_mib": round(row.memory_peak_mib) if row.samples else None,
        "idle_fraction": idle,
        "idle_decision": row.idle_decision,
        "warned_at": _iso(row.warned_at),
    }


def safeguard_events(job: Job) -> list[dict[str, Any]]:
    return [safeguard_data(e) for e in SafeguardEvent.objects.filter(portal_job_id=job.pk).order_by("at", "id")]


def safeguard_data(e: SafeguardEvent) -> dict[str, Any]:
    return {"at": e.at.isoformat(), "kind": e.get_kind_display(), "reason": e.reason, "actor": e.actor}


def charts(history: dict[str, dict[str, list[Point]]]) -> dict[str, dict[str, Any]]:
    return {
        metric: line_figure(title, unit, dict(sorted(history[metric].items())), y_range)
        for metric, title, unit, y_range in METRICS
    }


def log_tail(job: Job) -> dict[str, Any]:
    lines = services.read_log(job, 0, 100_000)
    start = max(0, len(lines) - LOG_TAIL)
    return {"offset": len(lines), "lines": lines[start:]}


def snapshot(job: Job) -> dict[str, Any]:
    history, stale = history_or_stale(job)
    return {
        "type": "snapshot",
        "job": job_state(job),
        "events": events(job),
        "charts": charts(history),
        "stale": stale,
        "efficiency": efficiency(job),
        "safeguards": safeguard_events(job),
        "log": log_tail(job),
    }


@dataclass
class JobNews:
    """What changed on a job since a page's log offset and last event: one read for all its pages."""

    job: Job
    log_from: int  # the offset `lines` start at
    lines: list[str]
    events: list[dict[str, Any]]  # every event after the oldest page's last one
    gpus: dict[str, Any] | None
    efficiency: dict[str, Any] | None
    safeguards: list[dict[str, Any]]

    def tick(self, log_offset: int, last_event_id: int) -> dict[str, Any]:
        """The tick of a page that has the log up to `log_offset` and the events up to `last_event_id`."""
        lines = self.lines[max(0, log_offset - self.log_from) :]
        return {
            "type": "tick",
            "job": job_state(self.job),
            "events": [e for e in self.events if e["id"] > last_event_id],
            "gpus": self.gpus,
            "efficiency": self.efficiency,
            "safeguards": self.safeguards,
            "log": {"offset": max(log_offset, self.log_from) + len(lines), "lines": lines},
        }


def news(since: dict[int, tuple[int, int]]) -> dict[int, JobNews]:
    """Per job id, what changed since (log offset, last event id): a handful of queries for every job
    watched, however many pages watch them. A job that no longer exists is left out."""
    jobs = Job.objects.in_bulk(list(since))
    after = min((event_id for _, event_id in since.values()), default=0)
    new_events: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in JobEvent.objects.filter(job_id__in=list(jobs), pk__gt=after).order_by("id"):
        if e.pk > since[e.job_id][1]:
            new_events[e.job_id].append(event_data(e))
    efficiencies = {row.portal_job_id: row for row in JobEfficiency.objects.filter(portal_job_id__in=list(jobs))}
    safeguards: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in SafeguardEvent.objects.filter(portal_job_id__in=list(jobs)).order_by("at", "id"):
        if event.portal_job_id is not None:
            safeguards[event.portal_job_id].append(safeguard_data(event))
    return {
        pk: JobNews(
            job=job,
            log_from=since[pk][0],
            lines=services.read_log(job, since[pk][0]),
            events=new_events[pk],
            gpus=gpu_now(job),
            efficiency=efficiency_data(efficiencies.get(pk)),
            safeguards=safeguards[pk],
        )
        for pk, job in jobs.items()
    }
