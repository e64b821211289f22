"""Invoices: lines by model and pool, totals to the cent, idempotent drafts, corrections on later months."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal

import pytest
from pytest_django import DjangoAssertNumQueries, Settings

from billing import services
from billing.errors import BillingError
from billing.models import Invoice, InvoiceLine, RateCard
from cluster.models import Pool
from jobs.models import Job
from portal.models import Team, User
from tests.billing.conftest import at

MARCH = date(2025, 3, 1)
APRIL_2 = at("2025-04-02 00:00")


@pytest.fixture
def march_usage(
    vision: Team, render: Team, alice: User, carol: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]
) -> None:
    """vision: 2 a100 on-prem for 10 h, 1 h100 for 3 h, 1 a100 on the cloud for 1 h; render: 1 a100 for 1 h."""
    job_with_history(vision, alice, [("2025-03-03 00:00", "admitted"), ("2025-03-03 10:00", "succeeded")], gpus=2)
    job_with_history(
        vision, alice, [("2025-03-04 00:00", "admitted"), ("2025-03-04 03:00", "succeeded")], gpu_model="h100", pool="onprem-h100"
    )
    job_with_history(vision, alice, [("2025-03-05 00:00", "admitted"), ("2025-03-05 01:00", "succeeded")], pool="burst-a100")
    job_with_history(render, carol, [("2025-03-06 00:00", "admitted"), ("2025-03-06 01:00", "succeeded")])
    services.meter_month(MARCH, now=APRIL_2)


def lines(invoice: Invoice) -> list[tuple[str, str, Decimal | None, Decimal]]:
    return [(line.gpu_model, line.pool, line.rate, line.amount) for line in invoice.lines.order_by("position")]


def test_an_invoice_has_a_line_per_model_and_pool_with_rate_and_amount(
    vision: Team, march_usage: None, settings: Settings
) -> None:
    settings.BILLING_CURRENCY = "CHF"
    invoice = services.generate_invoice(vision.pk, MARCH)
    assert lines(invoice) == [
        ("a100", "burst-a100", Decimal("3.5"), Decimal("3.50")),
        ("a100", "onprem-a100", Decimal("2"), Decimal("40.00")),
        ("h100", "onprem-h100", Decimal("4"), Decimal("12.00")),
    ]
    assert invoice.total == Decimal("55.50") and invoice.currency == "CHF" and invoice.state == "draft"


def test_drafting_twice_gives_the_same_invoice(vision: Team, march_usage: None) -> None:
    first = services.generate_invoice(vision.pk, MARCH)
    before = (lines(first), first.total)
    second = services.generate_invoice(vision.pk, MARCH)
    assert second.pk == first.pk and (lines(second), second.total) == before
    assert Invoice.objects.count() == 1 and InvoiceLine.objects.count() == 3


def test_the_total_equals_the_sum_of_the_lines_to_the_cent(
    vision: Team, alice: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]
) -> None:
    # 7 jobs of 1,001 s at 2.00/h: each line would be 0.5561 → rounding per line, total is the sum of lines
    for day in range(1, 8):
        job_with_history(vision, alice, [(f"2025-03-0{day} 00:00", "admitted"), (f"2025-03-0{day} 00:16:41", "succeeded")])
    services.change_rate(gpu_model="a100", pool_kind="onprem", per_gpu_hour=Decimal("2.0001"), from_day=date(2025, 3, 4))
    services.meter_month(MARCH, now=APRIL_2)
    invoice = services.generate_invoice(vision.pk, MARCH)
    stored = list(invoice.lines.values_list("amount", flat=True))
    assert len(stored) == 2 and Invoice.objects.get(pk=invoice.pk).total == sum(stored)
    assert all(a == a.quantize(Decimal("0.01")) for a in stored)


def test_draft_month_drafts_every_team_from_one_aggregate(
    vision: Team, render: Team, march_usage: None, django_assert_max_num_queries: DjangoAssertNumQueries
) -> None:
    with django_assert_max_num_queries(60):
        report = services.draft_month(MARCH)
    assert len(report.drafted) == 2 and report.failed == {}
    assert dict(Invoice.objects.values_list("team__slug", "total")) == {"vision": Decimal("55.50"), "render": Decimal("2.00")}


def test_usage_without_a_rate_card_stops_that_invoice_and_says_what_is_missing(
    vision: Team, alice: User, pools: dict[str, Pool], job_with_history: Callable[..., Job]
) -> None:
    job_with_history(vision, alice, [("2025-03-03 00:00", "admitted"), ("2025-03-03 10:00", "succeeded")])
    services.meter_month(MARCH, now=APRIL_2)
    with pytest.raises(BillingError, match="no rate card prices a100 on onprem-a100 \\(onprem\\) in 2025-03"):
        services.generate_invoice(vision.pk, MARCH)
    assert not Invoice.objects.exists()  # nothing half-done
    assert "vision" in services.draft_month(MARCH).failed


def test_a_correction_is_a_line_on_a_later_month(vision: Team, march_usage: None) -> None:
    march = services.finalise(services.generate_invoice(vision.pk, MARCH).pk, "fiona", now=APRIL_2)
    services.add_adjustment(march.pk, date(2025, 4, 1), Decimal("-5.00"), "h100 node was throttled", "fiona")
    april = services.generate_invoice(vision.pk, date(2025, 4, 1))
    assert [(line.kind, line.amount, line.corrects_id) for line in april.lines.all()] == [
        ("adjustment", Decimal("-5.00"), march.pk)
    ]
    assert april.total == Decimal("-5.00")
    assert Invoice.objects.get(pk=march.pk).total == Decimal("55.50")


@pytest.mark.parametrize(
    ("month", "amount", "reason", "field"),
    [(date(2025, 3, 1), "-1", "x", "month"), (date(2025, 4, 1), "0", "x", "amount"), (date(2025, 4, 1), "-1", " ", "reason")],
)
def test_bad_corrections_name_the_field(
    vision: Team, march_usage: None, month: date, amount: str, reason: str, field: str
) -> None:
    march = services.finalise(services.generate_invoice(vision.pk, MARCH).pk, "fiona", now=APRIL_2)
    with pytest.raises(BillingError) as caught:
        services.add_adjustment(march.pk, month, Decimal(amount), reason, "fiona")
    assert caught.value.field == field


def test_a_month_cannot_be_finalised_before_it_ends(vision: Team, march_usage: None) -> None:
    invoice = services.generate_invoice(vision.pk, MARCH)
    with pytest.raises(BillingError, match="2025-03 has not ended"):
        services.finalise(invoice.pk, "fiona", now=at("2025-03-31 23:59"))
