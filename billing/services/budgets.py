"""Budgets: set them, measure spend and burn, alert once per threshold and period, and act.

An alert is a row with a unique (budget, period, percent, kind); the worker whose insert wins
sends the notification after commit and records the threshold's action as a team restriction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from billing import budgets, pricing
from billing.choices import RESTRICTING_ACTIONS, AlertKind, BudgetAction
from billing.errors import BillingError
from billing.metering import next_month
from billing.models import Budget, BudgetAlert, BudgetThreshold, TeamRestriction, UsageRecord
from billing.services.invoices import _cards, currency, usage_groups
from billing.services.notify import finance_users, notify, team_leads

HOURS_PER_DAY = Decimal(24)


def set_budget(team_id: int, amount: Decimal, thresholds: Sequence[tuple[Decimal, str]], period: str = "month") -> Budget:
    """Create or replace a team's budget for the period kind; thresholds must rise strictly."""
    if period not in ("month", "quarter"):
        raise BillingError("period", f"must be month or quarter, got {period!r}")
    parsed = [budgets.Threshold(Decimal(p), a) for p, a in thresholds]
    try:
        budgets.check_budget(Decimal(amount), parsed)
    except budgets.BudgetError as exc:
        raise BillingError(exc.field, exc.message) from None
    with transaction.atomic():
        budget, _ = Budget.objects.update_or_create(team_id=team_id, period=period, defaults={"amount": amount, "active": True})
        BudgetThreshold.objects.filter(budget=budget).delete()
        BudgetThreshold.objects.bulk_create([BudgetThreshold(budget=budget, percent=t.percent, action=t.action) for t in parsed])
    return budget


def months_of(first: date, end: datetime) -> list[date]:
    months, month = [], first
    while month < end.date():
        months.append(month)
        month = next_month(month)
    return months


def spend(team_id: int, months: Sequence[date]) -> Decimal:
    """What the team's metered usage in these months costs, priced and rounded as invoices do."""
    groups = [g for g in usage_groups(months, [team_id]) if g.rate_card_id is not None]
    cards = _cards(groups)
    return pricing.total(pricing.line_amount(g.gpu_seconds, Decimal(cards[g.rate_card_id or 0].per_gpu_hour)) for g in groups)


def burn_per_day(team_id: int) -> Decimal:
    """What the GPUs the team holds right now cost per day (open usage records are the running jobs)."""
    records = UsageRecord.objects.filter(team_id=team_id, open=True, rate_card__isnull=False).select_related("rate_card")
    per_hour = sum((Decimal(r.gpus) * Decimal(r.rate_card.per_gpu_hour) for r in records if r.rate_card), Decimal(0))
    return per_hour * HOURS_PER_DAY


@dataclass(frozen=True)
class BudgetStatus:
    """Where a budget stands in its current period."""

    budget: Budget
    period_start: date
    period_end: datetime
    spent: Decimal
    burn_per_day: Decimal
    projected: Decimal

    @property
    def percent(self) -> Decimal:
        return budgets.percent_of(Decimal(self.budget.amount), self.spent)

    @property
    def projected_percent(self) -> Decimal:
        return budgets.percent_of(Decimal(self.budget.amount), self.projected)


def status(budget: Budget, now: datetime) -> BudgetStatus:
    first, _, end = budgets.period_bounds(budget.period, now)
    spent = spend(budget.team_id, months_of(first, end))
    burn = burn_per_day(budget.team_id)
    projected = pricing.round_money(budgets.projected_spend(spent, burn, now, end))
    return BudgetStatus(budget, first, end, spent, burn, projected)


def evaluate_budget(budget_id: int, now: datetime | None = None) -> list[BudgetAlert]:
    """Record and announce every threshold newly crossed or projected to be crossed; each only once per period."""
    now = now or timezone.now()
    budget = Budget.objects.select_related("team").get(pk=budget_id)
    if not budget.active:
        return []
    current = status(budget, now)
    amount = Decimal(budget.amount)
    thresholds = list(budget.thresholds.order_by("percent"))
    parsed = [budgets.Threshold(Decimal(t.percent), t.action) for t in thresholds]
    reached = {t.percent for t in budgets.crossed(amount, current.spent, parsed)}
    ahead = {t.percent for t in budgets.projected_crossings(amount, current.spent, current.projected, parsed)}
    alerts = []
    for threshold in thresholds:
        kind = AlertKind.CROSSED if threshold.percent in reached else AlertKind.PROJECTED if threshold.percent in ahead else None
        if kind is not None:
            alert = record_alert(threshold, kind, current, now)
            alerts += [alert] if alert else []
    return alerts


def record_alert(threshold: BudgetThreshold, kind: str, current: BudgetStatus, now: datetime) -> BudgetAlert | None:
    """Insert the alert, or do nothing if another worker already did; only the inserter acts."""
    budget = current.budget
    with transaction.atomic():
        try:
            with transaction.atomic():
                alert = BudgetAlert.objects.create(
                    budget=budget, team_id=budget.team_id, percent=threshold.percent, action=threshold.action,
                    period_start=current.period_start, kind=kind, spent=current.spent, projected=current.projected,
                    budget_amount=budget.amount, created_at=now,
                )  # fmt: skip
        except IntegrityError:
            return None
        if kind == AlertKind.CROSSED and threshold.action in RESTRICTING_ACTIONS:
            TeamRestriction.objects.create(
                team_id=budget.team_id, action=threshold.action, alert=alert, starts_at=now, ends_at=current.period_end
            )
        subject, body = alert_message(alert, current)
        notify([*finance_users(), *team_leads(budget.team_id)], subject, body, budget.team_id)
    return alert


def alert_message(alert: BudgetAlert, current: BudgetStatus) -> tuple[str, str]:
    code, team = currency(), current.budget.team.slug
    verb = "has reached" if alert.kind == AlertKind.CROSSED else "is projected to reach"
    subject = f"[GPU Grid] {team} {verb} {alert.percent.normalize():f} % of its {current.budget.period}ly budget"
    action = BudgetAction(alert.action).label if alert.kind == AlertKind.CROSSED else "none yet (warning)"
    body = (
        f"Team {team}, period from {current.period_start:%Y-%m-%d}.\n"
        f"Budget: {current.budget.amount} {code}\nSpent so far: {current.spent} {code} ({current.percent} %)\n"
        f"Burn right now: {pricing.round_money(current.burn_per_day)} {code} per day\n"
        f"Projected by the end of the period: {current.projected} {code} ({current.projected_percent} %)\n"
        f"Action: {action}\n"
    )
    return subject, body


def evaluate_all(now: datetime | None = None) -> int:
    now = now or timezone.now()
    return sum(len(evaluate_budget(pk, now)) for pk in Budget.objects.filter(active=True).values_list("id", flat=True))


def team_restrictions(team_id: int, at: datetime | None = None) -> set[str]:
    """Budget actions in force for the team now: any of hold_new_jobs, deny_bursts, lower_priority."""
    at = at or timezone.now()
    active = TeamRestriction.objects.filter(team_id=team_id, starts_at__lte=at, ends_at__gt=at, lifted_at__isnull=True)
    return set(active.values_list("action", flat=True))


def lift_restriction(restriction_id: int, actor: str, now: datetime | None = None) -> bool:
    """Finance lifts a restriction early (e.g. after raising the budget); the alert stays recorded."""
    lifted = TeamRestriction.objects.filter(pk=restriction_id, lifted_at__isnull=True).update(
        lifted_at=now or timezone.now(), lifted_by=actor[:150]
    )
    return bool(lifted)


def restrictions_of(team_id: int, now: datetime | None = None) -> list[TeamRestriction]:
    now = now or timezone.now()
    return list(TeamRestriction.objects.filter(Q(lifted_at__isnull=True), team_id=team_id, ends_at__gt=now))
