"""Invoices: drafted from usage aggregated in the database, finalised once, never edited after.

Generation is idempotent (drafting twice gives the same lines and total) and all-or-nothing
(one transaction per invoice). A finalised invoice is refused here, in the admin, in the API,
and on PostgreSQL by a trigger (migration 0002).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from billing import pricing
from billing.choices import INVOICE_TRANSITIONS, InvoiceState, LineKind
from billing.errors import BillingError, InvoiceFinalised
from billing.metering import month_bounds, month_of, next_month
from billing.models import Adjustment, Invoice, InvoiceLine, RateCard, UsageRecord
from billing.services.storage import storage_lines
from portal.models import Team
from portal.states import move

GROUP = ("team_id", "gpu_model", "pool", "pool_kind", "rate_card_id")
MAX_ADJUSTMENT = Decimal("10000000")


def currency() -> str:
    """The site's one currency, read when used (settings may change in tests and at deploy)."""
    code = str(getattr(settings, "BILLING_CURRENCY", "EUR"))
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise BillingError("BILLING_CURRENCY", f"must be a three-letter ISO 4217 code such as EUR, got {code!r}")
    return code


@dataclass(frozen=True)
class UsageGroup:
    """Usage of one team, GPU model, pool and rate card in a month, summed in the database."""

    team_id: int
    gpu_model: str
    pool: str
    pool_kind: str
    rate_card_id: int | None
    gpu_seconds: Decimal
    used_gpu_seconds: Decimal | None


def usage_groups(months: Iterable[date], team_ids: Iterable[int] | None = None) -> list[UsageGroup]:
    """One GROUP BY over the usage records of the months (and teams): the database does the summing."""
    records = UsageRecord.objects.filter(month__in=list(months))
    if team_ids is not None:
        records = records.filter(team_id__in=list(team_ids))
    rows = records.values(*GROUP).annotate(seconds=Sum("gpu_seconds"), used=Sum("used_gpu_seconds")).order_by(*GROUP)
    return [
        UsageGroup(r["team_id"], r["gpu_model"], r["pool"], r["pool_kind"], r["rate_card_id"], r["seconds"], r["used"])
        for r in rows
    ]


def _cards(groups: Iterable[UsageGroup]) -> dict[int, RateCard]:
    return RateCard.objects.in_bulk({g.rate_card_id for g in groups if g.rate_card_id is not None})


def _require_prices(groups: list[UsageGroup], month: date) -> None:
    unpriced = [g for g in groups if g.rate_card_id is None]
    if unpriced:
        what = ", ".join(sorted({f"{g.gpu_model} on {g.pool or '?'} ({g.pool_kind or 'unknown kind'})" for g in unpriced}))
        raise BillingError("rate_card", f"no rate card prices {what} in {month:%Y-%m}; add one, then draft again")


def usage_lines(groups: list[UsageGroup], cards: dict[int, RateCard]) -> list[InvoiceLine]:
    lines = []
    for group in groups:
        card = cards[group.rate_card_id or 0]
        rate = Decimal(card.per_gpu_hour)
        lines.append(
            InvoiceLine(
                kind=LineKind.USAGE,
                description=f"{group.gpu_model.upper()} GPU-hours on {group.pool}",
                gpu_model=group.gpu_model,
                pool=group.pool,
                pool_kind=group.pool_kind,
                rate_card=card,
                rate=rate,
                gpu_seconds=group.gpu_seconds,
                used_gpu_seconds=group.used_gpu_seconds,
                amount=pricing.line_amount(group.gpu_seconds, rate),
            )
        )
    return lines


def adjustment_lines(team_ids: Iterable[int], month: date) -> dict[int, list[InvoiceLine]]:
    """The month's corrections as lines, per team (one query for all teams)."""
    lines: dict[int, list[InvoiceLine]] = defaultdict(list)
    adjustments = Adjustment.objects.filter(team_id__in=list(team_ids), month=month).select_related("corrects").order_by("id")
    for a in adjustments:
        lines[a.team_id].append(
            InvoiceLine(
                kind=LineKind.ADJUSTMENT,
                corrects=a.corrects,
                amount=pricing.round_money(a.amount),
                description=f"{'Credit' if a.amount < 0 else 'Debit'} for {a.corrects.number}: {a.reason}"[:200],
            )
        )
    return lines


def _lock_drafts(team_ids: list[int], month: date, code: str) -> dict[int, Invoice]:
    """The teams' draft invoices for the month, created where missing and locked; finalised ones are left out."""
    Invoice.objects.bulk_create([Invoice(team_id=t, month=month, currency=code) for t in team_ids], ignore_conflicts=True)
    drafts = Invoice.objects.select_for_update().filter(month=month, team_id__in=team_ids, state=InvoiceState.DRAFT)
    return {invoice.team_id: invoice for invoice in drafts.select_related("team")}


def write_invoices(
    month: date, usage: dict[int, list[UsageGroup]], cards: dict[int, RateCard], storage: dict[int, list[InvoiceLine]]
) -> dict[int, Invoice]:
    """Replace the drafts' lines with their GPU usage, artifact storage and the month's corrections, all in one transaction.

    Bulk statements (one per step, not one per team) keep a 100-team month well inside a second.
    Returns the drafts written, by team; teams whose invoice is finalised are not in it.
    """
    code, now = currency(), timezone.now()
    with transaction.atomic():
        drafts = _lock_drafts(sorted(usage), month, code)
        corrections = adjustment_lines(drafts, month)
        lines = []
        for team_id, invoice in drafts.items():
            team_lines = usage_lines(usage[team_id], cards) + storage.get(team_id, []) + corrections[team_id]
            for position, line in enumerate(team_lines, start=1):
                line.invoice, line.position = invoice, position
            invoice.total, invoice.currency, invoice.generated_at = pricing.total(x.amount for x in team_lines), code, now
            lines += team_lines
        InvoiceLine.objects.filter(invoice__in=list(drafts.values())).delete()
        InvoiceLine.objects.bulk_create(lines, batch_size=2000)
        Invoice.objects.bulk_update(list(drafts.values()), ["total", "currency", "generated_at"], batch_size=500)
    return drafts


def generate_invoice(team_id: int, month: date) -> Invoice:
    """Draft (or redraft) one team's invoice for a month from its metered usage."""
    month = month.replace(day=1)
    groups = usage_groups([month], [team_id])
    _require_prices(groups, month)
    written = write_invoices(month, {team_id: groups}, _cards(groups), storage_lines(month, [team_id]))
    if team_id not in written:
        raise InvoiceFinalised(Invoice.objects.get(team_id=team_id, month=month).number)
    return written[team_id]


@dataclass
class DraftReport:
    """What drafting a month did: invoices drafted, finalised ones left alone, teams that failed and why."""

    month: date
    drafted: list[int] = field(default_factory=list)
    finalised: list[int] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def teams_to_bill(month: date, groups: list[UsageGroup], storage: dict[int, list[InvoiceLine]]) -> set[int]:
    """Teams with GPU usage, billed storage or corrections in the month, and teams with an invoice to bring up to date."""
    teams = {g.team_id for g in groups} | set(storage)
    teams |= set(Adjustment.objects.filter(month=month).values_list("team_id", flat=True))
    teams |= set(Invoice.objects.filter(month=month).values_list("team_id", flat=True))
    return teams


def draft_month(month: date) -> DraftReport:
    """Draft every team's invoice for the month from one aggregate query; finalised invoices are left alone."""
    month = month.replace(day=1)
    groups = usage_groups([month])
    by_team: dict[int, list[UsageGroup]] = defaultdict(list)
    for group in groups:
        by_team[group.team_id].append(group)
    slugs = dict(Team.objects.values_list("id", "slug"))
    report = DraftReport(month)
    storage = storage_lines(month)
    billable: dict[int, list[UsageGroup]] = {}
    for team_id in sorted(teams_to_bill(month, groups, storage)):
        try:
            _require_prices(by_team[team_id], month)
            billable[team_id] = by_team[team_id]
        except BillingError as exc:
            report.failed[slugs.get(team_id, str(team_id))] = str(exc)
    written = write_invoices(month, billable, _cards(groups), storage)
    report.drafted = sorted(invoice.pk for invoice in written.values())
    report.finalised = sorted(set(billable) - set(written))
    return report


def previous_month(now: datetime) -> date:
    this = month_of(now)
    return date(this.year - (this.month == 1), (this.month - 2) % 12 + 1, 1)


# --- finalising and corrections ----------------------------------------------------------


def finalise(invoice_id: int, actor: str, now: datetime | None = None) -> Invoice:
    """Freeze a draft: one conditional UPDATE, so two finance users clicking at once finalise it once."""
    now = now or timezone.now()
    invoice = Invoice.objects.select_related("team").get(pk=invoice_id)
    if invoice.is_finalised:
        raise InvoiceFinalised(invoice.number)
    if month_bounds(invoice.month)[1] > now:
        raise BillingError("month", f"{invoice.month:%Y-%m} has not ended yet; finalise from {next_month(invoice.month)} on")
    moved = move(Invoice, invoice_id, InvoiceState.FINALISED, INVOICE_TRANSITIONS, finalised_at=now, finalised_by=actor[:150])
    if moved is None:
        raise InvoiceFinalised(invoice.number)
    invoice.refresh_from_db()
    return invoice


def delete_draft(invoice_id: int) -> None:
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
        if invoice.is_finalised:
            raise InvoiceFinalised(invoice.number)
        invoice.delete()


def add_adjustment(corrects_id: int, month: date, amount: Decimal, reason: str, actor: str) -> Adjustment:
    """Correct a finalised invoice with a credit (negative) or debit on a later, still open month."""
    corrected = Invoice.objects.filter(pk=corrects_id).first()
    if corrected is None:
        raise BillingError("corrects", f"no invoice #{corrects_id}")
    _check_adjustment(corrected, month.replace(day=1), amount, reason)
    return Adjustment.objects.create(
        team_id=corrected.team_id, month=month.replace(day=1), corrects=corrected,
        amount=pricing.round_money(amount), reason=reason.strip()[:200], created_by=actor[:150],
    )  # fmt: skip


def _check_adjustment(corrected: Invoice, month: date, amount: Decimal, reason: str) -> None:
    if not corrected.is_finalised:
        raise BillingError("corrects", f"{corrected.number} is still a draft; draft it again instead of correcting it")
    if month <= corrected.month:
        raise BillingError("month", f"a correction goes on a later month than {corrected.month:%Y-%m}")
    if Invoice.objects.filter(team_id=corrected.team_id, month=month, state=InvoiceState.FINALISED).exists():
        raise BillingError("month", f"the invoice for {month:%Y-%m} is already finalised; pick a later month")
    if amount == 0 or abs(amount) > MAX_ADJUSTMENT:
        raise BillingError("amount", f"must be non-zero and at most {MAX_ADJUSTMENT} either way, got {amount}")
    if not reason.strip():
        raise BillingError("reason", "say why the correction is made")


def invoice_rows(invoice: Invoice) -> list[dict[str, Any]]:
    """The invoice's lines as plain rows for the page, the CSV, the PDF and the API."""
    return [
        {
            "position": line.position,
            "kind": line.kind,
            "description": line.description,
            "gpu_model": line.gpu_model,
            "pool": line.pool,
            "pool_kind": line.pool_kind,
            "gpu_hours": pricing.gpu_hours(line.gpu_seconds) if line.kind == LineKind.USAGE else None,
            "used_gpu_hours": pricing.gpu_hours(line.used_gpu_seconds) if line.used_gpu_seconds is not None else None,
            "rate": line.rate,
            "amount": line.amount,
        }
        for line in invoice.lines.order_by("position")
    ]
