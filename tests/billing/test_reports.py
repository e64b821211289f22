"""Cost reports behind the finance and team pages, summed in the database, and their chart figures."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal

import pytest

from billing import charts, services
from billing.models import RateCard
from billing.services import reports
from jobs.models import Job
from portal.models import Team, User
from tests.billing.conftest import at


@pytest.fixture
def two_months(
    vision: Team, render: Team, alice: User, carol: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]
) -> None:
    for month in (2, 3):
        job_with_history(vision, alice, [(f"2025-0{month}-03 00:00", "admitted"), (f"2025-0{month}-03 10:00", "succeeded")])
        job_with_history(
            vision,
            alice,
            [(f"2025-0{month}-04 00:00", "admitted"), (f"2025-0{month}-04 01:00", "succeeded")],
            gpu_model="h100",
            pool="onprem-h100",
        )
        job_with_history(
            render, carol, [(f"2025-0{month}-05 00:00", "admitted"), (f"2025-0{month}-05 02:00", "succeeded")], pool="burst-a100"
        )
        services.meter_month(date(2025, month, 1), now=at("2025-04-02 00:00"))
        services.draft_month(date(2025, month, 1))


def test_month_summary(two_months: None, vision: Team) -> None:
    report = reports.summary(date(2025, 3, 1))
    assert report["total"] == Decimal("31.00")  # vision 20 + 4, render 7
    assert report["by_gpu_model"] == {"a100": Decimal("27.00"), "h100": Decimal("4.00")}
    assert report["by_pool_kind"] == {"onprem": Decimal("24.00"), "cloud": Decimal("7.00")}
    assert report["top_spenders"] == [("vision", Decimal("24.00")), ("render", Decimal("7.00"))]
    assert reports.summary(date(2025, 3, 1), [vision.pk])["total"] == Decimal("24.00")


def test_trends_by_team_and_by_model(two_months: None, vision: Team) -> None:
    months = reports.months_back(date(2025, 3, 1), 3)
    assert months == [date(2025, 1, 1), date(2025, 2, 1), date(2025, 3, 1)]
    assert reports.trend(months, top=1) == {"vision": {date(2025, 2, 1): Decimal("24.00"), date(2025, 3, 1): Decimal("24.00")},
                                            "others": {date(2025, 2, 1): Decimal("7.00"), date(2025, 3, 1): Decimal("7.00")}}  # fmt: skip
    assert reports.monthly_cost_by("gpu_model", months, [vision.pk])["h100"] == {
        date(2025, 2, 1): Decimal("4.00"),
        date(2025, 3, 1): Decimal("4.00"),
    }


def test_chart_figures_are_data() -> None:
    months = [date(2025, 2, 1), date(2025, 3, 1)]
    trend = charts.monthly_trend_figure("t", "EUR", {"vision": {date(2025, 3, 1): Decimal("24.00")}}, months)
    assert trend["data"][0]["x"] == ["2025-02", "2025-03"] and list(trend["data"][0]["y"]) == [0.0, 24.0]
    assert trend["layout"]["barmode"] == "stack"
    top = charts.cost_bar_figure("top", "EUR", {"vision": Decimal(24), "render": Decimal(7)}, horizontal=True)
    assert list(top["data"][0]["y"]) == ["render", "vision"]  # largest on top
    donut = charts.pool_kind_figure("kinds", {"onprem": Decimal(24), "cloud": Decimal(7)})
    assert list(donut["data"][0]["labels"]) == ["On-premises", "Cloud burst"]
    budget = charts.budget_figure("b", "EUR", Decimal(100), Decimal(40), Decimal(90), [Decimal(50), Decimal(100)])
    assert [shape["x0"] for shape in budget["layout"]["shapes"]] == [50.0, 100.0]
