"""Budget arithmetic: periods, threshold checks, projected burn.

Pure: no ORM, no clock, no I/O. Amounts are Decimal in the site currency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from billing.metering import month_of, month_start, next_month

MAX_PERCENT = Decimal(1000)
ACTIONS = ("notify", "lower_priority", "deny_bursts", "hold_new_jobs")
SECONDS_PER_DAY = Decimal(86_400)


class BudgetError(ValueError):
    """A budget was refused; `field` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Threshold:
    """A percentage of the budget and what happens when spend reaches it."""

    percent: Decimal
    action: str

    def amount(self, budget: Decimal) -> Decimal:
        return budget * self.percent / 100


def check_budget(amount: Decimal, thresholds: Sequence[Threshold]) -> None:
    """Refuse a non-positive amount, no thresholds, thresholds out of order, or an unknown action."""
    if amount <= 0:
        raise BudgetError("amount", f"must be more than 0, got {amount}")
    if not thresholds:
        raise BudgetError("thresholds", "give at least one threshold, e.g. 50, 80 and 100 %")
    for i, threshold in enumerate(thresholds):
        if not Decimal(0) < threshold.percent <= MAX_PERCENT:
            raise BudgetError(
                f"thresholds[{i}].percent", f"must be more than 0 and at most {MAX_PERCENT}, got {threshold.percent}"
            )
        if threshold.action not in ACTIONS:
            raise BudgetError(f"thresholds[{i}].action", f"unknown action {threshold.action!r}; one of {', '.join(ACTIONS)}")
        if i and threshold.percent <= thresholds[i - 1].percent:
            raise BudgetError(
                f"thresholds[{i}].percent",
                f"thresholds must rise strictly: {threshold.percent} % comes after {thresholds[i - 1].percent} %",
            )


def crossed(amount: Decimal, spent: Decimal, thresholds: Sequence[Threshold]) -> list[Threshold]:
    """The thresholds that spend has reached."""
    return [t for t in thresholds if spent >= t.amount(amount)]


def projected_spend(spent: Decimal, burn_per_day: Decimal, now: datetime, period_end: datetime) -> Decimal:
    """Spend by the end of the period if the current burn rate (cost per day right now) holds."""
    remaining = max(Decimal(0), Decimal(str((period_end - now).total_seconds())) / SECONDS_PER_DAY)
    return spent + burn_per_day * remaining


def projected_crossings(amount: Decimal, spent: Decimal, projected: Decimal, thresholds: Sequence[Threshold]) -> list[Threshold]:
    """Thresholds not reached yet that the projection says will be reached by the period's end."""
    return [t for t in thresholds if spent < t.amount(amount) <= projected]


def period_bounds(period: str, at: datetime) -> tuple[date, datetime, datetime]:
    """The period containing `at`: its first day, first instant and the first instant after it."""
    month = month_of(at)
    first = month if period == "month" else date(month.year, 3 * ((month.month - 1) // 3) + 1, 1)
    last = next_month(first)
    if period == "quarter":
        last = next_month(next_month(last))
    return first, month_start(first), month_start(last)


def percent_of(amount: Decimal, spent: Decimal) -> Decimal:
    return (spent * 100 / amount).quantize(Decimal("0.1")) if amount else Decimal(0)
