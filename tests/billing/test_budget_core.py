"""The pure budget core: thresholds in order, crossings, projected burn, periods."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from billing import budgets
from billing.budgets import BudgetError, Threshold
from tests.billing.conftest import at

T = [Threshold(Decimal(50), "notify"), Threshold(Decimal(80), "notify"), Threshold(Decimal(100), "hold_new_jobs")]


def test_thresholds_out_of_order_are_rejected_naming_the_threshold() -> None:
    with pytest.raises(BudgetError) as caught:
        budgets.check_budget(Decimal(1000), [Threshold(Decimal(80), "notify"), Threshold(Decimal(50), "notify")])
    assert caught.value.field == "thresholds[1].percent"
    assert "50 % comes after 80 %" in caught.value.message


@pytest.mark.parametrize(
    ("amount", "thresholds", "field"),
    [(Decimal(0), T, "amount"), (Decimal(10), [], "thresholds"), (Decimal(10), [Threshold(Decimal(0), "notify")], "thresholds[0].percent"),
     (Decimal(10), [Threshold(Decimal(50), "explode")], "thresholds[0].action"),
     (Decimal(10), [Threshold(Decimal(50), "notify"), Threshold(Decimal(50), "notify")], "thresholds[1].percent")],
)  # fmt: skip
def test_bad_budgets_name_the_field(amount: Decimal, thresholds: list[Threshold], field: str) -> None:
    with pytest.raises(BudgetError) as caught:
        budgets.check_budget(amount, thresholds)
    assert caught.value.field == field


def test_crossed_thresholds() -> None:
    budgets.check_budget(Decimal(1000), T)
    assert [t.percent for t in budgets.crossed(Decimal(1000), Decimal("799.99"), T)] == [50]
    assert [t.percent for t in budgets.crossed(Decimal(1000), Decimal(800), T)] == [50, 80]


def test_projection_is_current_burn_times_the_remaining_days() -> None:
    projected = budgets.projected_spend(Decimal(400), Decimal(50), at("2025-04-20 00:00"), at("2025-05-01 00:00"))
    assert projected == Decimal(400 + 50 * 11)
    assert [t.percent for t in budgets.projected_crossings(Decimal(1000), Decimal(400), projected, T)] == [50, 80]


def test_periods() -> None:
    assert budgets.period_bounds("month", at("2025-02-10 00:00"))[0] == date(2025, 2, 1)
    first, start, end = budgets.period_bounds("quarter", at("2025-12-31 23:59"))
    assert (first, start, end) == (date(2025, 10, 1), at("2025-10-01 00:00"), at("2026-01-01 00:00"))
