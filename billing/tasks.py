"""Celery tasks for billing: thin wrappers over billing.services, all safe to repeat."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import shared_task
from django.utils import timezone

from billing import services
from billing.services import usage
from billing.services.notify import finance_users, notify

METERING_OVERLAP = timedelta(minutes=30)  # generous: re-metering is idempotent, a missed job is not


@shared_task(acks_late=True)
def draft_last_month_invoices() -> dict[str, Any]:
    """On the 1st: meter last month, draft every team's invoice (finalised ones untouched), tell finance."""
    month = services.previous_month(timezone.now())
    services.meter_month(month)
    report = services.draft_month(month)
    failures = "".join(f"\n- {team}: {why}" for team, why in sorted(report.failed.items()))
    notify(
        finance_users(),
        f"[GPU Grid] Draft invoices for {month:%Y-%m} are ready",
        f"{len(report.drafted)} invoices drafted, {len(report.finalised)} already finalised.{failures}\n"
        "Review and finalise them on the billing page.",
    )
    return {"month": f"{month:%Y-%m}", "drafted": len(report.drafted), "failed": report.failed}


@shared_task(acks_late=True)
def meter_usage() -> int:
    return services.meter_recent(since=timezone.now() - METERING_OVERLAP)


@shared_task(acks_late=True)
def meter_jobs(job_ids: list[int]) -> int:
    """Meter these jobs again now (the telemetry fixed their busy share as they ended)."""
    return usage.meter_jobs(job_ids)


@shared_task(acks_late=True)
def evaluate_budgets() -> int:
    services.meter_recent(since=timezone.now() - METERING_OVERLAP)
    return services.evaluate_all()
