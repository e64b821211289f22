"""Artifact storage billing: storage rate cards, the byte-seconds each team keeps per day, and the invoice lines.

The artifact store measures each team's bytes periodically (artifacts.services.measure_usage); each
pass records the bytes of the pass before as kept until now (`record`). A month's storage is billed
per storage rate card in force on its days, as GB-months (10⁹ bytes for 30 days) x the card's rate;
days no card covers are not billed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import F

from billing import pricing
from billing.choices import LineKind
from billing.errors import BillingError
from billing.metering import next_month
from billing.models import InvoiceLine, StorageRateCard, StorageUsage
from billing.services.rates import first_open_month
from portal.locks import transaction_lock

STORAGE_RATE_LOCK = "billing-storage-rate-cards"


def as_rate(card: StorageRateCard) -> pricing.StorageRate:
    return pricing.StorageRate(card.pk or 0, card.valid_from, card.valid_until, Decimal(card.per_gb_month))


def all_rates() -> list[pricing.StorageRate]:
    return [as_rate(card) for card in StorageRateCard.objects.all()]


def add_storage_rate(
    *, per_gb_month: Decimal, valid_from: date, valid_until: date | None = None, note: str = ""
) -> StorageRateCard:
    """Create a storage rate card after checking its amount, its period, that it overlaps no other card and
    that it does not reach into a finalised month."""
    card = StorageRateCard(per_gb_month=per_gb_month, valid_from=valid_from, valid_until=valid_until, note=note)
    with transaction.atomic():
        transaction_lock(STORAGE_RATE_LOCK)  # two concurrent adds must not both pass the overlap check
        opens = first_open_month()
        if opens is not None and valid_from < opens:
            raise BillingError("valid_from", f"{valid_from} lies in a finalised month; storage rates can start from {opens} on")
        try:
            pricing.check_storage_rate(as_rate(card), all_rates())
        except pricing.RateCardError as exc:
            raise BillingError(exc.field, exc.message) from None
        card.save()
    return card


def rate_on(day: date) -> StorageRateCard | None:
    """The storage rate card in force on `day`, if any."""
    return StorageRateCard.objects.filter(valid_from__lte=day).exclude(valid_until__lte=day).order_by("-valid_from").first()


def record(team_id: int, kept_bytes: int, since: datetime, until: datetime) -> None:
    """Add `kept_bytes` held from `since` to `until` to the team's days (callers make sure each span is recorded once)."""
    for day, byte_seconds in pricing.byte_seconds_by_day(kept_bytes, since, until):
        if byte_seconds <= 0:
            continue
        StorageUsage.objects.get_or_create(team_id=team_id, day=day)
        StorageUsage.objects.filter(team_id=team_id, day=day).update(byte_seconds=F("byte_seconds") + byte_seconds)


def _days(month: date, team_ids: Iterable[int] | None) -> dict[int, list[tuple[date, Decimal]]]:
    rows = StorageUsage.objects.filter(day__gte=month, day__lt=next_month(month))
    if team_ids is not None:
        rows = rows.filter(team_id__in=list(team_ids))
    days: dict[int, list[tuple[date, Decimal]]] = defaultdict(list)
    for team_id, day, byte_seconds in rows.values_list("team_id", "day", "byte_seconds"):
        days[team_id].append((day, Decimal(byte_seconds)))
    return days


def storage_lines(month: date, team_ids: Iterable[int] | None = None) -> dict[int, list[InvoiceLine]]:
    """The month's storage lines per team (one line per storage rate card in force in the month); teams
    without billable storage are left out."""
    rates = all_rates()
    cards = StorageRateCard.objects.in_bulk([r.card_id for r in rates])
    lines: dict[int, list[InvoiceLine]] = {}
    for team_id, days in _days(month, team_ids).items():
        charges = pricing.storage_charges(days, rates)
        if charges:
            lines[team_id] = [_line(cards[rate.card_id], byte_seconds) for rate, byte_seconds in charges]
    return lines


def _line(card: StorageRateCard, byte_seconds: Decimal) -> InvoiceLine:
    rate = Decimal(card.per_gb_month)
    gb_months = pricing.gb_months(byte_seconds)
    return InvoiceLine(
        kind=LineKind.STORAGE,
        description=f"Artifact storage: {gb_months:.4f} GB-months at {rate} per GB-month",
        storage_rate=card,
        rate=rate,
        gb_months=gb_months.quantize(Decimal("0.000001")),
        amount=pricing.storage_amount(byte_seconds, rate),
    )


@dataclass(frozen=True)
class MonthSoFar:
    """A team's storage this month until now: GB-months kept and what they cost at the cards in force."""

    gb_months: Decimal
    amount: Decimal


def month_so_far(team_id: int, month: date) -> MonthSoFar:
    days = _days(month, [team_id]).get(team_id, [])
    charges = pricing.storage_charges(days, all_rates())
    return MonthSoFar(
        pricing.gb_months(sum((d[1] for d in days), Decimal(0))).quantize(Decimal("0.0001")),
        pricing.total(pricing.storage_amount(b, r.per_gb_month) for r, b in charges),
    )
