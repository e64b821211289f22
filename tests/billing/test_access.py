"""Who reaches which billing page and API endpoint: finance all, a lead their team, nobody else.

Personas: fiona (finance), bob (lead of vision), alice (researcher in vision), carol (render, the
outsider), anonymous.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from django.http import HttpResponseRedirect
from django.test import Client
from rest_framework.test import APIClient

from billing import services
from billing.models import Invoice, RateCard
from jobs.models import Job
from portal.models import Team, User
from tests.billing.conftest import at


@pytest.fixture
def invoice(vision: Team, alice: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]) -> Invoice:
    job_with_history(vision, alice, [("2025-03-03 00:00", "admitted"), ("2025-03-03 10:00", "succeeded")])
    services.meter_month(date(2025, 3, 1), now=at("2025-04-02 00:00"))
    services.set_budget(vision.pk, Decimal(100), [(Decimal(50), "notify"), (Decimal(100), "hold_new_jobs")])
    return services.generate_invoice(vision.pk, date(2025, 3, 1))


PAGES = ["/billing/teams/vision/", "/billing/invoices/{i}/", "/billing/invoices/{i}.csv", "/billing/invoices/{i}.pdf"]


@pytest.mark.parametrize("url", PAGES)
def test_team_pages_for_finance_and_the_teams_lead_only(
    web: Callable[[User | None], Client], invoice: Invoice, fiona: User, bob: User, alice: User, carol: User, url: str
) -> None:
    url = url.format(i=invoice.pk)
    assert web(fiona).get(url).status_code == 200
    assert web(bob).get(url).status_code == 200
    assert web(alice).get(url).status_code == 403  # a researcher: billing is not for them
    assert web(carol).get(url).status_code == 403
    assert web(None).get(url).status_code == 302


def test_a_lead_of_another_team_gets_not_found(
    web: Callable[[User | None], Client], invoice: Invoice, render: Team, carol: User
) -> None:
    from portal.models import Membership, TeamRole

    Membership.objects.filter(user=carol).update(role=TeamRole.LEAD)
    assert web(carol).get(f"/billing/invoices/{invoice.pk}/").status_code == 404
    assert web(carol).get("/billing/teams/vision/").status_code == 404
    assert web(carol).get(f"/billing/invoices/{invoice.pk}.pdf").status_code == 404


def test_the_overview_is_finances_and_sends_leads_to_their_team(
    web: Callable[[User | None], Client], invoice: Invoice, fiona: User, bob: User, alice: User, carol: User
) -> None:
    page = web(fiona).get("/billing/?month=2025-03")
    assert page.status_code == 200 and invoice.number.encode() in page.content and b'data-chart="trend"' in page.content
    to_team = web(bob).get("/billing/")
    assert isinstance(to_team, HttpResponseRedirect) and to_team.url == "/billing/teams/vision/"
    assert web(alice).get("/billing/").status_code == 403
    assert web(carol).get("/billing/").status_code == 403
    assert web(fiona).get("/billing/?month=2025-13").status_code == 400  # bad input names its field; not a missing page


def test_finance_only_actions(
    web: Callable[[User | None], Client], invoice: Invoice, fiona: User, bob: User, carol: User
) -> None:
    for user in (bob, carol):
        assert web(user).post(f"/billing/invoices/{invoice.pk}/finalise/").status_code in (403, 404)
        assert web(user).post("/billing/draft/", {"month": "2025-03"}).status_code == 403
        assert web(user).get("/billing/months/2025-03.csv").status_code == 403
    assert web(fiona).get("/billing/months/2025-03.csv").status_code == 200
    assert web(fiona).post("/billing/draft/", {"month": "2025-03"}).status_code == 302
    assert web(fiona).post(f"/billing/invoices/{invoice.pk}/finalise/").status_code == 302


API = ["/api/v1/billing/invoices/", "/api/v1/billing/invoices/{i}/", "/api/v1/billing/invoices/{i}/csv/",
       "/api/v1/billing/invoices/{i}/pdf/", "/api/v1/billing/budgets/", "/api/v1/billing/rate-cards/",
       "/api/v1/billing/summary/?month=2025-03"]  # fmt: skip


@pytest.mark.parametrize("url", API)
def test_api_reads_for_finance_and_the_lead_only(
    api: Callable[[User | None], APIClient], invoice: Invoice, fiona: User, bob: User, alice: User, carol: User, url: str
) -> None:
    url = url.format(i=invoice.pk)
    assert api(fiona).get(url).status_code == 200
    assert api(bob).get(url).status_code == 200
    assert api(alice).get(url).status_code == 403
    assert api(carol).get(url).status_code == 403
    assert api(None).get(url).status_code == 401


def test_api_lists_only_the_callers_teams(
    api: Callable[[User | None], APIClient], invoice: Invoice, render: Team, bob: User, fiona: User
) -> None:
    other = services.generate_invoice(render.pk, date(2025, 3, 1))
    assert {i["team"] for i in api(bob).get("/api/v1/billing/invoices/").json()["results"]} == {"vision"}
    assert api(bob).get(f"/api/v1/billing/invoices/{other.pk}/").status_code == 404
    assert {i["team"] for i in api(fiona).get("/api/v1/billing/invoices/").json()["results"]} == {"vision", "render"}
    assert [t["team"] for t in api(bob).get("/api/v1/billing/summary/?month=2025-03").json()["teams"]] == ["vision"]


@pytest.mark.parametrize(
    ("url", "body"),
    [("/api/v1/billing/invoices/generate/", {"team": "vision", "month": "2025-03"}),
     ("/api/v1/billing/invoices/{i}/finalise/", {}),
     ("/api/v1/billing/rate-cards/", {"gpu_model": "v100", "pool_kind": "onprem", "per_gpu_hour": "1", "valid_from": "2025-01-01"}),
     ("/api/v1/billing/budgets/", {"team": "vision", "amount": "5", "thresholds": [{"percent": "100", "action": "notify"}]})],
)  # fmt: skip
def test_api_writes_are_finances(
    api: Callable[[User | None], APIClient], invoice: Invoice, bob: User, carol: User, url: str, body: dict[str, Any]
) -> None:
    url = url.format(i=invoice.pk)
    assert api(bob).post(url, body, format="json").status_code == 403
    assert api(carol).post(url, body, format="json").status_code == 403
    assert api(None).post(url, body, format="json").status_code == 401
