"""The first hour: after `seed_demo`, every persona's main page shows something to act on (Django test client)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from pytest_django import Settings

from billing.metering import month_of
from billing.models import Budget, BudgetAlert, Invoice, RateCard
from billing.services import previous_month
from bursting.models import BurstProposal, BurstState
from cluster.models import Pool
from jobs.models import Job
from portal.models import User
from quotas.models import TeamQuota


def signed_in(username: str) -> Client:
    client = Client()
    client.force_login(User.objects.get(username=username))
    return client


DEMO_POOLS = "onprem-a100:onprem:a100:4x8,onprem-h100:onprem:h100:2x8,burst-a10g:cloud:a10g:0x4"  # SIM_POOLS' default


@pytest.fixture
def demo(db: None, settings: Settings) -> None:
    settings.SIM_POOLS = DEMO_POOLS  # the grid a first start has, not the smaller one of the other tests
    call_command("seed_demo", stdout=StringIO())


def test_finance_sees_last_months_draft_invoices_and_can_draft_this_month(demo: None) -> None:
    last = previous_month(timezone.now())
    drafts = Invoice.objects.filter(month=last, state="draft")
    assert drafts.count() == 3  # every demo team ran jobs last month
    page = signed_in("fiona").get("/billing/").content.decode()
    assert all(invoice.number in page for invoice in drafts) and "Draft" in page
    assert f'<option value="{month_of(timezone.now()):%Y-%m}"' in page
    this_month = f"{month_of(timezone.now()):%Y-%m}"
    drafted = signed_in("fiona").post("/billing/draft/", {"month": this_month})
    said = [str(m) for m in get_messages(drafted.wsgi_request)]
    assert drafted.status_code == 302 and said and "invoices drafted" in said[0] and len(said) == 1, said  # no "no rate card"
    assert Invoice.objects.filter(month=month_of(timezone.now())).exists()
    kinds = {(p.gpu_model, p.kind) for p in Pool.objects.all()} | {("a10g", "cloud")}
    assert kinds <= set(RateCard.objects.values_list("gpu_model", "pool_kind"))


def test_a_budget_is_near_its_notify_threshold(demo: None) -> None:
    budget = Budget.objects.get(team__slug="vision")
    assert 80 <= budget.thresholds.order_by("percent").first().percent <= 80  # type: ignore[union-attr]
    assert BudgetAlert.objects.filter(team__slug="vision", percent=80, kind="crossed").exists()
    page = signed_in("bob").get("/billing/teams/vision/")
    assert page.status_code == 200 and b"budget" in page.content.lower()


def test_the_operator_has_a_burst_proposal_to_approve(demo: None) -> None:
    burst = BurstProposal.objects.get(state=BurstState.PROPOSED)
    assert burst.pool == "burst-a10g"
    client = signed_in("olivia")
    assert f"/console/bursts/{burst.pk}/".encode() in client.get("/console/bursts/").content
    assert b"a10g-queue" in client.get("/console/policies/").content
    approved = client.post(f"/console/bursts/{burst.pk}/approve/", {"reason": "demo"})
    assert approved.status_code == 302
    burst.refresh_from_db()
    assert burst.state == BurstState.PROVISIONING


def test_the_lead_can_raise_the_teams_limit(demo: None) -> None:
    quota = TeamQuota.objects.get(team__slug="vision", gpu_model="a100")
    assert quota.lead_max_limit is not None and quota.lead_max_limit > quota.limit
    client = signed_in("bob")
    assert b"Change a quota" in client.get("/teams/vision/").content
    raised = client.post(
        "/teams/vision/", {"gpu_model": "a100", "limit": str(quota.limit + 4), "lendable": "on", "reason": "deadline"}
    )
    assert raised.status_code == 302
    said = [str(m) for m in get_messages(raised.wsgi_request)]
    assert said and said[0].startswith("Quota for vision A100 saved"), said
    assert TeamQuota.objects.get(pk=quota.pk).limit == quota.limit + 4


def test_a_researcher_sees_a_finished_job(demo: None) -> None:
    finished = Job.objects.filter(owner__username="alice", state="succeeded").first()
    assert finished is not None
    page = signed_in("alice").get("/jobs/").content.decode()
    assert finished.name in page


def test_seed_demo_again_changes_nothing_it_already_made(demo: None) -> None:
    before = (
        Job.objects.count(),
        Invoice.objects.count(),
        RateCard.objects.count(),
        BurstProposal.objects.count(),
        Budget.objects.count(),
    )
    call_command("seed_demo", stdout=StringIO())
    after = (
        Job.objects.count(),
        Invoice.objects.count(),
        RateCard.objects.count(),
        BurstProposal.objects.count(),
        Budget.objects.count(),
    )
    assert after == before
