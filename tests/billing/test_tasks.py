"""The beat task on the 1st drafts last month's invoices and tells finance; the budget task alerts."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from django.core import mail
from pytest_django import DjangoCaptureOnCommitCallbacks

from billing import services, tasks
from billing.models import BudgetAlert, Invoice, Notification, RateCard
from jobs.models import Job
from portal.models import Team, User
from tests.billing.conftest import at


def test_on_the_first_last_months_invoices_are_drafted_and_finance_told(
    vision: Team,
    alice: User,
    fiona: User,
    rates: dict[str, RateCard],
    job_with_history: Callable[..., Job],
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    job_with_history(vision, alice, [("2025-03-31 22:00", "admitted"), ("2025-03-31 22:01", "running")])  # still running
    monkeypatch.setattr("django.utils.timezone.now", lambda: at("2025-04-01 02:00"))
    with django_capture_on_commit_callbacks(execute=True):
        result = tasks.draft_last_month_invoices.apply().get()
    assert result["month"] == "2025-03" and result["drafted"] == 1
    invoice = Invoice.objects.get()
    assert invoice.state == "draft" and invoice.total == Decimal("4.00")  # billed up to the month boundary only
    assert Notification.objects.get(recipient=fiona).subject == "[GPU Grid] Draft invoices for 2025-03 are ready"
    assert mail.outbox[0].to == ["fiona@example.org"]


def test_the_budget_task_meters_and_alerts(
    vision: Team,
    alice: User,
    bob: User,
    rates: dict[str, RateCard],
    job_with_history: Callable[..., Job],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services.set_budget(vision.pk, Decimal(10), [(Decimal(100), "hold_new_jobs")])
    job_with_history(vision, alice, [("2025-03-10 00:00", "admitted"), ("2025-03-10 00:01", "running")])
    monkeypatch.setattr("django.utils.timezone.now", lambda: at("2025-03-10 06:00"))  # 6 GPU-hours: 12.00
    assert tasks.evaluate_budgets.apply().get() == 1
    assert BudgetAlert.objects.get().kind == "crossed"
    assert services.team_restrictions(vision.pk) == {"hold_new_jobs"}
