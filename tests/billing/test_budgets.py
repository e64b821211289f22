"""Budgets: thresholds alert once per period, act, warn ahead from projected burn, and are recorded."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal

import pytest
from django.core import mail
from pytest_django import DjangoCaptureOnCommitCallbacks

from billing import services
from billing.errors import BillingError
from billing.models import Budget, BudgetAlert, Notification, RateCard, TeamRestriction
from jobs.models import Job
from portal.models import Team, User
from tests.billing.conftest import at

NOW = at("2025-03-10 00:00")
THRESHOLDS = [(Decimal(50), "notify"), (Decimal(80), "deny_bursts"), (Decimal(100), "hold_new_jobs")]


@pytest.fixture
def budget(vision: Team) -> Budget:
    return services.set_budget(vision.pk, Decimal(100), THRESHOLDS)


def spend_hours(vision: Team, alice: User, job_with_history: Callable[..., Job], hours: int, day: str = "2025-03-02") -> None:
    """vision uses `hours` a100 on-prem GPU-hours (2.00 each) on `day`."""
    job_with_history(vision, alice, [(f"{day} 00:00", "admitted"), (f"{day} {hours:02d}:00", "succeeded")])
    services.meter_month(date(2025, 3, 1), now=NOW)


def test_thresholds_out_of_order_are_rejected(vision: Team) -> None:
    with pytest.raises(BillingError) as caught:
        services.set_budget(vision.pk, Decimal(100), [(Decimal(80), "notify"), (Decimal(50), "notify")])
    assert caught.value.field == "thresholds[1].percent"


def test_crossing_a_threshold_notifies_by_mail_and_in_app_once(
    vision: Team,
    alice: User,
    bob: User,
    fiona: User,
    rates: dict[str, RateCard],
    budget: Budget,
    job_with_history: Callable[..., Job],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    spend_hours(vision, alice, job_with_history, 13)  # 26.00
    assert services.evaluate_budget(budget.pk, NOW) == []
    spend_hours(vision, alice, job_with_history, 13, "2025-03-03")  # 52.00
    with django_capture_on_commit_callbacks(execute=True):
        alerts = services.evaluate_budget(budget.pk, NOW)
        again = services.evaluate_budget(budget.pk, NOW)
    assert [(a.percent, a.kind) for a in alerts] == [(Decimal(50), "crossed")] and again == []
    assert len(mail.outbox) == 1 and sorted(mail.outbox[0].to) == ["bob@example.org", "fiona@example.org"]
    assert "vision has reached 50 % of its monthly budget" in mail.outbox[0].subject
    assert sorted(Notification.objects.values_list("recipient__username", flat=True)) == ["bob", "fiona"]
    assert "alice" not in mail.outbox[0].to


def test_each_threshold_alerts_again_in_the_next_period(
    vision: Team, alice: User, rates: dict[str, RateCard], budget: Budget, job_with_history: Callable[..., Job]
) -> None:
    spend_hours(vision, alice, job_with_history, 13)
    spend_hours(vision, alice, job_with_history, 13, "2025-03-03")
    assert len(services.evaluate_budget(budget.pk, NOW)) == 1
    job_with_history(vision, alice, [("2025-04-02 00:00", "admitted"), ("2025-04-02 13:00", "succeeded")])
    job_with_history(vision, alice, [("2025-04-03 00:00", "admitted"), ("2025-04-03 13:00", "succeeded")])
    services.meter_month(date(2025, 4, 1), now=at("2025-04-10 00:00"))
    assert [a.period_start for a in services.evaluate_budget(budget.pk, at("2025-04-10 00:00"))] == [date(2025, 4, 1)]


def test_crossing_a_hold_threshold_records_the_restriction_for_admission(
    vision: Team, alice: User, rates: dict[str, RateCard], budget: Budget, job_with_history: Callable[..., Job]
) -> None:
    spend_hours(vision, alice, job_with_history, 20)
    spend_hours(vision, alice, job_with_history, 20, "2025-03-03")  # 80.00 → 50 and 80 %
    services.evaluate_budget(budget.pk, NOW)
    assert services.team_restrictions(vision.pk, NOW) == {"deny_bursts"}
    spend_hours(vision, alice, job_with_history, 10, "2025-03-04")  # 100.00
    services.evaluate_budget(budget.pk, NOW)
    assert services.team_restrictions(vision.pk, NOW) == {"deny_bursts", "hold_new_jobs"}
    assert services.team_restrictions(vision.pk, at("2025-04-01 00:00")) == set()  # ends with the period
    hold = TeamRestriction.objects.get(action="hold_new_jobs")
    assert services.lift_restriction(hold.pk, "fiona", NOW)
    assert services.team_restrictions(vision.pk, NOW) == {"deny_bursts"}


def test_projected_burn_warns_before_the_threshold_is_crossed(
    vision: Team, alice: User, rates: dict[str, RateCard], budget: Budget, job_with_history: Callable[..., Job]
) -> None:
    spend_hours(vision, alice, job_with_history, 10)  # 20.00 spent
    # a 1-GPU job running now burns 48.00 a day: far past 100 % by the month's end
    job_with_history(vision, alice, [("2025-03-09 23:00", "admitted"), ("2025-03-09 23:01", "running")])
    services.meter_month(date(2025, 3, 1), now=NOW)
    alerts = services.evaluate_budget(budget.pk, NOW)
    assert [(a.percent, a.kind) for a in alerts] == [
        (Decimal(50), "projected"),
        (Decimal(80), "projected"),
        (Decimal(100), "projected"),
    ]
    assert services.team_restrictions(vision.pk, NOW) == set()  # a warning does not act
    status = services.status(budget, NOW)
    assert status.spent == Decimal("22.00") and status.burn_per_day == Decimal(48)


def test_a_quarterly_budget_sums_the_quarters_months(
    vision: Team, alice: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]
) -> None:
    budget = services.set_budget(vision.pk, Decimal(10), [(Decimal(100), "notify")], period="quarter")
    job_with_history(vision, alice, [("2025-01-02 00:00", "admitted"), ("2025-01-02 03:00", "succeeded")])
    job_with_history(vision, alice, [("2025-02-02 00:00", "admitted"), ("2025-02-02 03:00", "succeeded")])
    services.meter_month(date(2025, 1, 1), now=NOW)
    services.meter_month(date(2025, 2, 1), now=NOW)
    assert services.status(budget, NOW).spent == Decimal("12.00")
    assert [a.period_start for a in services.evaluate_budget(budget.pk, NOW)] == [date(2025, 1, 1)]
    assert BudgetAlert.objects.count() == 1
