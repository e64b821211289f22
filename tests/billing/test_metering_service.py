"""Metering from job events into usage records: backends alike, idempotent, finalised months untouched."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal

from billing import services
from billing.models import RateCard, UsageRecord
from jobs.models import Job
from portal.models import Team, User
from tests.billing.conftest import at

NOW = at("2025-05-10 00:00")


def test_it_writes_one_record_per_month_and_rate_piece(
    vision: Team, alice: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]
) -> None:
    job = job_with_history(vision, alice, [("2025-03-31 22:00", "pending"), ("2025-03-31 23:00", "admitted"),
                                           ("2025-03-31 23:01", "running"), ("2025-04-01 02:00", "succeeded")], gpus=2)  # fmt: skip
    assert services.meter_job(job.pk, NOW) == 2
    records = list(UsageRecord.objects.filter(job=job).order_by("start"))
    assert [(r.month, r.gpu_seconds, r.pool_kind, r.rate_card_id) for r in records] == [
        (date(2025, 3, 1), Decimal(2 * 3600), "onprem", rates["a100-onprem"].pk),
        (date(2025, 4, 1), Decimal(2 * 7200), "onprem", rates["a100-onprem"].pk),
    ]
    assert not any(r.open for r in records)


def test_metering_twice_gives_the_same_records(
    vision: Team, alice: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]
) -> None:
    job = job_with_history(
        vision, alice, [("2025-03-01 00:00", "pending"), ("2025-03-01 01:00", "admitted"), ("2025-03-01 03:00", "failed")]
    )
    services.meter_job(job.pk, NOW)
    first = list(UsageRecord.objects.values_list("month", "start", "end", "gpu_seconds"))
    services.meter_job(job.pk, NOW)
    assert list(UsageRecord.objects.values_list("month", "start", "end", "gpu_seconds")) == first


def test_usage_from_every_backend_lands_on_the_same_footing(
    vision: Team, alice: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]
) -> None:
    for backend in ("simulator", "slurm", "kubernetes"):
        job = job_with_history(
            vision, alice, [("2025-03-02 00:00", "pending"), ("2025-03-02 01:00", "admitted"), ("2025-03-02 02:00", "succeeded")]
        )
        job.backend = backend
        job.save(update_fields=["backend"])
        services.meter_job(job.pk, NOW)
    assert sorted(UsageRecord.objects.values_list("backend", flat=True)) == ["kubernetes", "simulator", "slurm"]
    assert {r.gpu_seconds for r in UsageRecord.objects.all()} == {Decimal(3600)}


def test_a_requeued_job_on_another_pool_is_billed_on_each_pool(
    vision: Team, alice: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]
) -> None:
    job = job_with_history(vision, alice, [("2025-03-01 00:00", "pending"), ("2025-03-01 01:00", "admitted"),
                                           ("2025-03-01 02:00", "requeued")], pool="onprem-a100")  # fmt: skip
    from jobs.models import JobEvent

    JobEvent.objects.create(
        job=job,
        at=at("2025-03-01 05:00"),
        from_state="requeued",
        to_state="admitted",
        actor="system",
        reason="admitted to burst-a100",
        pool="burst-a100",
    )
    JobEvent.objects.create(job=job, at=at("2025-03-01 06:00"), from_state="admitted", to_state="succeeded", actor="system")
    services.meter_job(job.pk, NOW)
    assert list(UsageRecord.objects.order_by("start").values_list("pool", "pool_kind", "gpu_seconds")) == [
        ("onprem-a100", "onprem", Decimal(3600)), ("burst-a100", "cloud", Decimal(3600)),
    ]  # fmt: skip


def test_a_running_job_has_an_open_record_that_grows(
    vision: Team, alice: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]
) -> None:
    job = job_with_history(
        vision, alice, [("2025-05-09 00:00", "pending"), ("2025-05-09 12:00", "admitted"), ("2025-05-09 12:01", "running")]
    )
    services.meter_job(job.pk, NOW)
    assert list(UsageRecord.objects.values_list("gpu_seconds", "open")) == [(Decimal(12 * 3600), True)]
    services.meter_job(job.pk, at("2025-05-10 06:00"))
    assert list(UsageRecord.objects.values_list("gpu_seconds", "open")) == [(Decimal(18 * 3600), True)]


def test_remetering_leaves_finalised_months_alone(
    vision: Team, alice: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]
) -> None:
    job = job_with_history(vision, alice, [("2025-03-31 12:00", "admitted"), ("2025-03-31 12:01", "running")])
    services.meter_job(job.pk, at("2025-04-01 12:00"))
    invoice = services.generate_invoice(vision.pk, date(2025, 3, 1))
    services.finalise(invoice.pk, "fiona", now=at("2025-04-02 00:00"))
    march = list(UsageRecord.objects.filter(month=date(2025, 3, 1)).values_list("id", "gpu_seconds"))
    services.meter_job(job.pk, at("2025-04-03 00:00"))
    assert list(UsageRecord.objects.filter(month=date(2025, 3, 1)).values_list("id", "gpu_seconds")) == march
    assert UsageRecord.objects.get(month=date(2025, 4, 1)).gpu_seconds == Decimal(2 * 86400)


def test_meter_month_finds_a_job_running_through_the_whole_month(
    vision: Team, alice: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]
) -> None:
    job_with_history(vision, alice, [("2025-01-20 00:00", "admitted"), ("2025-01-20 00:01", "running")])
    job_with_history(vision, alice, [("2025-01-01 00:00", "admitted"), ("2025-01-02 00:00", "succeeded")])
    services.meter_month(date(2025, 2, 1), now=at("2025-03-05 00:00"))
    february = UsageRecord.objects.get(month=date(2025, 2, 1))
    assert february.gpu_seconds == Decimal(28 * 86400)


def test_utilisation_from_telemetry_is_kept_across_remetering(
    vision: Team, alice: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]
) -> None:
    from billing.services.usage import record_utilisation

    job = job_with_history(vision, alice, [("2025-03-01 00:00", "admitted"), ("2025-03-01 10:00", "succeeded")])
    services.meter_job(job.pk, NOW)
    record_utilisation(job.pk, 0.25)
    services.meter_job(job.pk, NOW)
    assert UsageRecord.objects.get().used_gpu_seconds == Decimal(9000)
