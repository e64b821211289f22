"""The billing API for scripts: draft, read, export, finalise, correct; rate cards and budgets with clear errors."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pytest
from rest_framework.test import APIClient

from billing import services
from billing.models import Budget, RateCard
from jobs.models import Job
from portal.models import Team, User
from tests.billing.conftest import at


@pytest.fixture
def usage(vision: Team, alice: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]) -> None:
    job_with_history(vision, alice, [("2025-03-03 00:00", "admitted"), ("2025-03-03 10:00", "succeeded")], gpus=2)


def test_a_script_drafts_reads_and_exports_an_invoice(api: Callable[[User | None], APIClient], usage: None, fiona: User) -> None:
    client = api(fiona)
    drafted = client.post("/api/v1/billing/invoices/generate/", {"team": "vision", "month": "2025-03"}, format="json")
    assert drafted.status_code == 200
    body = drafted.json()
    assert (body["team"], body["month"], body["state"], body["total"], body["currency"]) == (
        "vision",
        "2025-03",
        "draft",
        "40.00",
        "EUR",
    )
    assert [(line["pool"], line["rate"], line["amount"]) for line in body["lines"]] == [("onprem-a100", "2.0000", "40.00")]
    again = client.post("/api/v1/billing/invoices/generate/", {"team": "vision", "month": "2025-03"}, format="json").json()
    assert again["id"] == body["id"] and again["lines"] == body["lines"]
    csv = client.get(f"/api/v1/billing/invoices/{body['id']}/csv/")
    assert csv["Content-Type"].startswith("text/csv") and b"onprem-a100" in csv.content
    pdf = client.get(f"/api/v1/billing/invoices/{body['id']}/pdf/")
    assert pdf["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    listed = client.get("/api/v1/billing/invoices/?month=2025-03&team=vision").json()["results"]
    assert [i["id"] for i in listed] == [body["id"]]


def test_bad_input_names_the_field(api: Callable[[User | None], APIClient], usage: None, fiona: User) -> None:
    client = api(fiona)
    assert client.post("/api/v1/billing/invoices/generate/", {"team": "vision", "month": "March"}, format="json").json() == {
        "month": ["'March' is not a month; use YYYY-MM, e.g. 2025-03"]
    }
    assert "team" in client.post("/api/v1/billing/invoices/generate/", {"team": "nope", "month": "2025-03"}, format="json").json()
    assert client.get("/api/v1/billing/invoices/?month=2025-3").status_code == 400
    assert client.get("/api/v1/billing/summary/?month=2025-99").status_code == 400


def test_an_overlapping_rate_card_is_refused_with_the_reason(
    api: Callable[[User | None], APIClient], rates: dict[str, RateCard], fiona: User
) -> None:
    response = api(fiona).post(
        "/api/v1/billing/rate-cards/",
        {"gpu_model": "a100", "pool_kind": "onprem", "per_gpu_hour": "1.5", "valid_from": "2025-02-01"},
        format="json",
    )
    assert response.status_code == 400
    assert "overlaps rate card" in response.json()["valid_from"][0]
    assert RateCard.objects.count() == 3


def test_a_rate_change_through_the_api(api: Callable[[User | None], APIClient], rates: dict[str, RateCard], fiona: User) -> None:
    response = api(fiona).post(
        "/api/v1/billing/rate-cards/change/",
        {"gpu_model": "a100", "pool_kind": "onprem", "per_gpu_hour": "2.5", "from_day": "2025-06-01"},
        format="json",
    )
    assert response.status_code == 201 and response.json()["valid_from"] == "2025-06-01"


def test_a_budget_with_thresholds_out_of_order_is_refused(
    api: Callable[[User | None], APIClient], vision: Team, fiona: User
) -> None:
    body = {
        "team": "vision",
        "amount": "1000",
        "thresholds": [{"percent": "80", "action": "notify"}, {"percent": "50", "action": "hold_new_jobs"}],
    }
    response = api(fiona).post("/api/v1/billing/budgets/", body, format="json")
    assert response.status_code == 400
    assert response.json() == {"thresholds[1].percent": ["thresholds must rise strictly: 50.00 % comes after 80.00 %"]}
    assert not Budget.objects.exists()


def test_a_budget_through_the_api(api: Callable[[User | None], APIClient], vision: Team, bob: User, fiona: User) -> None:
    body = {
        "team": "vision",
        "amount": "1000",
        "thresholds": [
            {"percent": "50"},
            {"percent": "80", "action": "deny_bursts"},
            {"percent": "100", "action": "hold_new_jobs"},
        ],
    }
    assert api(fiona).post("/api/v1/billing/budgets/", body, format="json").status_code == 201
    listed = api(bob).get("/api/v1/billing/budgets/").json()
    assert [(b["team"], b["amount"], [t["action"] for t in b["thresholds"]]) for b in listed] == [
        ("vision", "1000.00", ["notify", "deny_bursts", "hold_new_jobs"])
    ]


def test_a_correction_through_the_api_lands_on_a_later_month(
    api: Callable[[User | None], APIClient], vision: Team, usage: None, fiona: User
) -> None:
    services.meter_month(date(2025, 3, 1), now=at("2025-04-02 00:00"))
    march = services.finalise(services.generate_invoice(vision.pk, date(2025, 3, 1)).pk, "fiona", now=at("2025-04-02 00:00"))
    client = api(fiona)
    assert (
        client.post(
            f"/api/v1/billing/invoices/{march.pk}/correct/",
            {"month": "2025-04", "amount": "-4.00", "reason": "outage"},
            format="json",
        ).status_code
        == 201
    )
    april = client.post("/api/v1/billing/invoices/generate/", {"team": "vision", "month": "2025-04"}, format="json").json()
    assert [(line["kind"], line["amount"], line["corrects"]) for line in april["lines"]] == [
        ("adjustment", "-4.00", march.number)
    ]
