"""Cost reports for the finance and team pages and the API, summed in the database from invoice lines."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from django.db.models import Sum

from billing.choices import LineKind
from billing.models import Invoice, InvoiceLine
from portal.models import Team


def months_back(last: date, count: int) -> list[date]:
    """`count` months ending with `last`, oldest first."""
    months = []
    year, month = last.year, last.month
    for _ in range(count):
        months.append(date(year, month, 1))
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return months[::-1]


def _lines(months: Sequence[date], team_ids: Sequence[int] | None) -> Any:
    lines = InvoiceLine.objects.filter(invoice__month__in=list(months))
    return lines if team_ids is None else lines.filter(invoice__team_id__in=list(team_ids))


def cost_by(field: str, months: Sequence[date], team_ids: Sequence[int] | None = None) -> dict[str, Decimal]:
    """Usage cost per value of `field` (gpu_model or pool_kind), largest first."""
    rows = (
        _lines(months, team_ids).filter(kind=LineKind.USAGE).values(field).annotate(cost=Sum("amount")).order_by("-cost", field)
    )
    return {r[field]: r["cost"] for r in rows}


def monthly_cost_by(field: str, months: Sequence[date], team_ids: Sequence[int] | None = None) -> dict[str, dict[date, Decimal]]:
    """Usage cost per value of `field` and month, in one grouped query."""
    rows = _lines(months, team_ids).filter(kind=LineKind.USAGE).values_list(field, "invoice__month").annotate(cost=Sum("amount"))
    series: dict[str, dict[date, Decimal]] = defaultdict(dict)
    for name, month, cost in rows.order_by(field, "invoice__month"):
        series[name][month] = cost
    return dict(series)


def trend(months: Sequence[date], team_ids: Sequence[int] | None = None, top: int = 8) -> dict[str, dict[date, Decimal]]:
    """Monthly totals per team for the `top` teams over the months; the rest summed as 'others'."""
    invoices = Invoice.objects.filter(month__in=list(months))
    if team_ids is not None:
        invoices = invoices.filter(team_id__in=list(team_ids))
    rows = list(invoices.values_list("team__slug", "month", "total"))
    ranking: dict[str, Decimal] = defaultdict(Decimal)
    for slug, _, amount in rows:
        ranking[slug] += amount
    leaders = set(sorted(ranking, key=lambda s: (-ranking[s], s))[:top])
    series: dict[str, dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for slug, month, amount in rows:
        series[slug if slug in leaders else "others"][month] += amount
    return {name: dict(series[name]) for name in sorted(series, key=lambda s: (s == "others", -ranking.get(s, Decimal(0)), s))}


def month_invoices(month: date, team_ids: Sequence[int] | None = None) -> list[Invoice]:
    invoices = Invoice.objects.filter(month=month).select_related("team").order_by("-total", "team__slug")
    return list(invoices if team_ids is None else invoices.filter(team_id__in=list(team_ids)))


def efficiency(months: Sequence[date], team_ids: Sequence[int] | None = None) -> dict[str, Decimal]:
    """Allocated versus busy GPU-seconds, over lines that telemetry measured, and the idle share of their cost."""
    sums = (
        _lines(months, team_ids)
        .filter(used_gpu_seconds__isnull=False)
        .aggregate(held=Sum("gpu_seconds"), used=Sum("used_gpu_seconds"), cost=Sum("amount"))
    )
    held, used, cost = (sums[k] or Decimal(0) for k in ("held", "used", "cost"))
    idle_cost = (cost * (held - used) / held).quantize(Decimal("0.01")) if held else Decimal(0)
    return {"held_s": held, "used_s": used, "idle_cost": idle_cost}


def summary(month: date, team_ids: Sequence[int] | None = None) -> dict[str, Any]:
    """Everything the finance page and the API's summary endpoint show for one month."""
    invoices = month_invoices(month, team_ids)
    return {
        "month": month,
        "invoices": invoices,
        "total": sum((i.total for i in invoices), Decimal("0.00")),
        "by_gpu_model": cost_by("gpu_model", [month], team_ids),
        "by_pool_kind": cost_by("pool_kind", [month], team_ids),
        "top_spenders": [(i.team.slug, i.total) for i in invoices[:10]],
        "efficiency": efficiency([month], team_ids),
        "by_department": by_department(invoices),
    }


def by_department(invoices: Sequence[Invoice]) -> dict[str, Decimal]:
    """The month's invoice totals per department (teams in none under "no department"), largest first."""
    names = dict(Team.objects.filter(pk__in=[i.team_id for i in invoices]).values_list("pk", "department__slug"))
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for invoice in invoices:
        totals[names.get(invoice.team_id) or NO_DEPARTMENT] += invoice.total
    return dict(sorted(totals.items(), key=lambda item: (item[0] == NO_DEPARTMENT, -item[1], item[0])))


NO_DEPARTMENT = "no department"
