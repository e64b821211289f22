"""Telemetry into billing, through the whole portal: the share of a job's GPU samples that were busy
becomes its used GPU-seconds on the usage records, the invoice lines and the idle cost."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal

from django.db.models import F
from pytest_django import DjangoCaptureOnCommitCallbacks

from billing import services
from billing.models import UsageRecord
from billing.services import reports
from cluster.models import JobEfficiency, SimJob
from cluster.simulator.backend import SimulatorBackend
from grid import telemetry
from jobs import services as job_services
from jobs.models import Job, JobEvent
from portal.models import User
from tests.telemetry.test_cycle import running

MICRO = Decimal("0.000001")


def test_busy_time_from_telemetry_reaches_records_invoice_and_idle_cost(
    grid: SimulatorBackend,
    alice: User,
    submit: Callable[..., Job],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    services.add_rate_card(gpu_model="a100", pool_kind="onprem", per_gpu_hour=Decimal("2.00"), valid_from=date(2024, 1, 1))
    job = running(submit(alice, gpus_per_node=2), load=0.9)
    for _ in range(3):
        telemetry.run_cycle()
    SimJob.objects.filter(portal_job_id=job.pk).update(load=0.0)
    telemetry.run_cycle()
    row = JobEfficiency.objects.get(portal_job_id=job.pk)
    assert (row.samples, row.idle_samples) == (8, 2)  # two GPUs, four cycles, the last one idle

    # While it runs, metering already takes the busy share so far.
    JobEvent.objects.filter(job=job).update(at=F("at") - timedelta(hours=1))
    services.meter_job(job.pk)
    so_far = list(UsageRecord.objects.filter(job=job))
    assert so_far and all(r.used_gpu_seconds == (r.gpu_seconds * Decimal("0.75")).quantize(MICRO) for r in so_far)

    job_services.cancel(alice, job)
    UsageRecord.objects.filter(job=job).update(used_gpu_seconds=None)  # only the telemetry's pass may fill it again
    with django_capture_on_commit_callbacks(execute=True):
        telemetry.run_cycle()  # the job ended: its summary is fixed and its usage metered again
    row.refresh_from_db()
    assert row.final and row.idle_fraction == 0.25
    records = list(UsageRecord.objects.filter(job=job))
    held = sum((r.gpu_seconds for r in records), Decimal(0))
    used = sum((r.used_gpu_seconds or Decimal(0) for r in records), Decimal(0))
    assert held > 2 * 3500 and abs(used - held * Decimal("0.75")) <= MICRO * len(records)

    months = sorted({r.month for r in records})
    invoices = [services.generate_invoice(job.team_id, month) for month in months]
    lines = [line for invoice in invoices for line in invoice.lines.all() if line.kind != "storage"]
    assert sum((line.used_gpu_seconds or Decimal(0) for line in lines), Decimal(0)) == used
    figures = reports.efficiency(months, [job.team_id])
    cost = sum((line.amount for line in lines), Decimal(0))
    assert figures["held_s"] == held and figures["used_s"] == used
    assert figures["idle_cost"] == (cost * Decimal("0.25")).quantize(Decimal("0.01")) and figures["idle_cost"] > 0
