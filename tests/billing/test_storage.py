"""Artifact storage billing: storage rate cards, byte-seconds per day from the store's measurements, the
invoice's storage lines, the figure beside the quotas, and who may read and set storage rates.

Personas: fiona (finance), bob (lead of vision), alice (researcher in vision), carol (render, the outsider)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from pytest_django import Settings
from rest_framework.test import APIClient

from artifacts import services as artifacts
from billing import pricing, services
from billing.choices import LineKind
from billing.errors import BillingError
from billing.models import Invoice, RateCard, StorageUsage
from billing.services import storage
from jobs.models import Job
from portal.models import Team, User
from tests.billing.conftest import at

GB = 10**9
DAY_S = 86400


# --- the pure core -----------------------------------------------------------------------------------


def test_a_span_is_cut_at_utc_midnights() -> None:
    pieces = pricing.byte_seconds_by_day(1000, at("2025-03-01 22:00"), at("2025-03-03 01:00"))
    assert pieces == [
        (date(2025, 3, 1), Decimal(1000 * 2 * 3600)),
        (date(2025, 3, 2), Decimal(1000 * DAY_S)),
        (date(2025, 3, 3), Decimal(1000 * 3600)),
    ]
    assert pricing.byte_seconds_by_day(1000, at("2025-03-01 10:00"), at("2025-03-01 10:00")) == []


def test_a_gb_kept_thirty_days_is_one_gb_month() -> None:
    byte_seconds = Decimal(250 * GB * 30 * DAY_S)
    assert pricing.gb_months(byte_seconds) == Decimal(250)
    assert pricing.storage_amount(byte_seconds, Decimal("0.02")) == Decimal("5.00")  # as artifacts.layout prices it


def test_days_are_billed_by_the_card_in_force_and_days_without_one_are_not() -> None:
    march, april = (
        pricing.StorageRate(1, date(2025, 3, 1), date(2025, 3, 16), Decimal("0.02")),
        pricing.StorageRate(2, date(2025, 3, 16), None, Decimal("0.03")),
    )
    days = [
        (date(2025, 2, 28), Decimal(5)),
        (date(2025, 3, 1), Decimal(10)),
        (date(2025, 3, 15), Decimal(20)),
        (date(2025, 3, 16), Decimal(7)),
    ]
    assert pricing.storage_charges(days, [april, march]) == [(march, Decimal(30)), (april, Decimal(7))]


@pytest.mark.parametrize(
    ("rate", "field", "words"),
    [
        (pricing.StorageRate(0, date(2025, 1, 1), None, Decimal("-1")), "per_gb_month", "between 0 and 10000"),
        (pricing.StorageRate(0, date(2025, 1, 1), None, Decimal("0.00001")), "per_gb_month", "at most 4 decimal places"),
        (pricing.StorageRate(0, date(2025, 1, 1), date(2025, 1, 1), Decimal("1")), "valid_until", "must be after valid_from"),
        (pricing.StorageRate(0, date(2025, 6, 1), None, Decimal("1")), "valid_from", "overlaps storage rate card #9"),
    ],
)
def test_a_bad_storage_card_is_refused_naming_the_field(rate: pricing.StorageRate, field: str, words: str) -> None:
    existing = [pricing.StorageRate(9, date(2025, 1, 1), None, Decimal("0.02"))] if field == "valid_from" else []
    with pytest.raises(pricing.RateCardError) as refused:
        pricing.check_storage_rate(rate, existing)
    assert refused.value.field == field and words in refused.value.message


# --- metering from the store's measurements ------------------------------------------------------------


@pytest.fixture
def stored(settings: Settings, tmp_path: Path, alice: User, submit: Callable[..., Job]) -> Callable[[int], None]:
    """A file store with one file of alice's job whose size the test sets."""
    root = tmp_path / "artifacts"
    root.mkdir()
    settings.ARTIFACT_STORE = f"file://{root}"
    artifacts._open.cache_clear()
    job = submit(alice)
    target = root / "vision" / str(job.pk) / "output"
    target.mkdir(parents=True)

    def keep(size: int) -> None:
        (target / "data.bin").write_bytes(b"x" * size)

    return keep


def test_each_measurement_bills_the_span_since_the_last_once(stored: Callable[[int], None], vision: Team) -> None:
    stored(1000)
    artifacts.measure_usage(now=at("2025-03-01 23:00"))  # the first measurement: nothing before it to bill
    assert not StorageUsage.objects.exists()
    stored(5000)
    artifacts.measure_usage(now=at("2025-03-02 01:00"))  # 1000 bytes kept for the 2 hours since
    artifacts.measure_usage(now=at("2025-03-02 01:00"))  # the same pass again records nothing
    days = dict(StorageUsage.objects.filter(team=vision).values_list("day", "byte_seconds"))
    assert days == {date(2025, 3, 1): 1000 * 3600, date(2025, 3, 2): 1000 * 3600}
    artifacts.measure_usage(now=at("2025-03-02 02:00"))
    assert StorageUsage.objects.get(team=vision, day=date(2025, 3, 2)).byte_seconds == 1000 * 3600 + 5000 * 3600


# --- invoices ------------------------------------------------------------------------------------------


def keep_for_march(team: Team, gb: int, days: range) -> None:
    for day in days:
        storage.record(team.pk, gb * GB, at(f"2025-03-{day:02d} 00:00"), at(f"2025-03-{day:02d} 00:00") + timedelta(days=1))


def test_storage_is_its_own_line_on_the_invoice_at_each_card_in_force(
    vision: Team, rates: dict[str, RateCard], alice: User, job_with_history: Callable[..., Job]
) -> None:
    job_with_history(vision, alice, [("2025-03-03 00:00", "admitted"), ("2025-03-03 10:00", "succeeded")])
    services.meter_month(date(2025, 3, 1), now=at("2025-04-02 00:00"))
    services.add_storage_rate(per_gb_month=Decimal("0.0300"), valid_from=date(2025, 3, 1), valid_until=date(2025, 3, 16))
    services.add_storage_rate(per_gb_month=Decimal("0.0600"), valid_from=date(2025, 3, 16))
    keep_for_march(vision, 300, range(1, 31))  # 300 GB for 30 days: 150 GB-months at each card

    invoice = services.generate_invoice(vision.pk, date(2025, 3, 1))
    lines = list(invoice.lines.order_by("position"))
    assert [line.kind for line in lines] == [LineKind.USAGE, LineKind.STORAGE, LineKind.STORAGE]
    first, second = lines[1], lines[2]
    assert (first.gb_months, first.rate, first.amount) == (Decimal(150), Decimal("0.0300"), Decimal("4.50"))
    assert (second.gb_months, second.rate, second.amount) == (Decimal(150), Decimal("0.0600"), Decimal("9.00"))
    assert first.description == "Artifact storage: 150.0000 GB-months at 0.0300 per GB-month"
    assert invoice.total == lines[0].amount + Decimal("13.50")
    assert services.generate_invoice(vision.pk, date(2025, 3, 1)).total == invoice.total  # drafting again: the same


def test_a_team_with_only_storage_gets_an_invoice_and_without_a_card_nobody_pays_for_storage(
    vision: Team, render: Team, rates: dict[str, RateCard]
) -> None:
    keep_for_march(render, 30, range(1, 31))
    report = services.draft_month(date(2025, 3, 1))
    assert report.drafted == [] and not Invoice.objects.exists()  # storage is billed only where a rate is set

    services.add_storage_rate(per_gb_month=Decimal("1"), valid_from=date(2025, 1, 1))
    report = services.draft_month(date(2025, 3, 1))
    [invoice] = Invoice.objects.filter(pk__in=report.drafted)
    assert invoice.team == render and invoice.total == Decimal("30.00")
    assert [line.kind for line in invoice.lines.all()] == [LineKind.STORAGE]


def test_a_storage_rate_cannot_reach_into_a_finalised_month(vision: Team, rates: dict[str, RateCard]) -> None:
    services.add_storage_rate(per_gb_month=Decimal("1"), valid_from=date(2025, 1, 1), valid_until=date(2025, 2, 1))
    keep_for_march(vision, 1, range(1, 2))
    services.add_storage_rate(per_gb_month=Decimal("1"), valid_from=date(2025, 3, 1))
    invoice = services.generate_invoice(vision.pk, date(2025, 3, 1))
    services.finalise(invoice.pk, "fiona", now=at("2025-04-02 00:00"))
    with pytest.raises(BillingError) as refused:
        services.add_storage_rate(per_gb_month=Decimal("2"), valid_from=date(2025, 2, 1), valid_until=date(2025, 3, 1))
    assert refused.value.field == "valid_from" and "finalised month" in refused.value.message


# --- beside the quotas ---------------------------------------------------------------------------------


def test_the_team_page_shows_this_months_storage_beside_the_quotas(
    stored: Callable[[int], None], vision: Team, alice: User, carol: User, web: Callable[[User | None], Client]
) -> None:
    services.add_storage_rate(per_gb_month=Decimal("2"), valid_from=date(2020, 1, 1))
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    storage.record(vision.pk, 3 * GB, today, today + timedelta(days=1))  # 0.1 GB-months so far
    stored(10)
    artifacts.measure_usage()
    page = web(alice).get("/teams/vision/").content.decode()
    assert 'id="artifact-storage-month"' in page and "0.1000 GB-months, 0.20 on the invoice so far" in page
    assert page.index("Quotas, use and lending") < page.index("artifact-storage-month")
    outsider = web(carol).get("/teams/vision/")
    assert outsider.status_code == 404 and b"GB-months" not in outsider.content


# --- who reads and sets storage rates -----------------------------------------------------------------


URL = "/api/v1/billing/storage-rates/"


def test_finance_sets_storage_rates_and_bad_input_names_the_field(
    api: Callable[[User | None], APIClient], fiona: User, db: Any
) -> None:
    made = api(fiona).post(URL, {"per_gb_month": "0.0200", "valid_from": "2030-01-01"}, format="json")
    assert made.status_code == 201 and made.json()["per_gb_month"] == "0.0200"
    overlap = api(fiona).post(URL, {"per_gb_month": "0.03", "valid_from": "2030-06-01"}, format="json")
    assert overlap.status_code == 400 and "overlaps storage rate card" in overlap.json()["valid_from"][0]
    negative = api(fiona).post(URL, {"per_gb_month": "-1", "valid_from": "2031-01-01"}, format="json")
    assert negative.status_code == 400 and "per_gb_month" in negative.json()
    backwards = api(fiona).post(
        URL, {"per_gb_month": "1", "valid_from": "2020-02-01", "valid_until": "2020-01-01"}, format="json"
    )
    assert backwards.status_code == 400 and "must be after valid_from" in backwards.json()["valid_until"][0]
    assert [c["valid_from"] for c in api(fiona).get(URL).json()] == ["2030-01-01"]


def test_leads_read_storage_rates_and_nobody_else_reads_or_sets_them(
    api: Callable[[User | None], APIClient], fiona: User, bob: User, alice: User, carol: User
) -> None:
    card = services.add_storage_rate(per_gb_month=Decimal("0.02"), valid_from=date(2030, 1, 1))
    body = {"per_gb_month": "0.01", "valid_from": "2040-01-01"}
    assert api(bob).get(URL).status_code == 200 and api(bob).get(f"{URL}{card.pk}/").status_code == 200
    assert api(bob).post(URL, body, format="json").status_code == 403  # a lead reads; finance sets
    for user in (alice, carol):  # a researcher and the outsider: refused
        assert api(user).get(URL).status_code == 403
        assert api(user).get(f"{URL}{card.pk}/").status_code == 403
        assert api(user).post(URL, body, format="json").status_code == 403
    assert api(None).get(URL).status_code == 401 and api(None).post(URL, body, format="json").status_code == 401
    assert [c["id"] for c in api(fiona).get(URL).json()] == [card.pk]  # nothing the refused posts made
