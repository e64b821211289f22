"""Rate cards: the only write path, with overlap and finalised-month checks."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from django.db import transaction

from billing import pricing
from billing.choices import InvoiceState
from billing.errors import BillingError
from billing.metering import month_of, month_start, next_month
from billing.models import Invoice, RateCard
from portal.locks import transaction_lock

RATE_LOCK = "billing-rate-cards"


def day_start(day: date) -> datetime:
    return month_start(day).replace(day=day.day)


def as_rate(card: RateCard) -> pricing.Rate:
    return pricing.Rate(
        card_id=card.pk or 0,
        gpu_model=card.gpu_model,
        pool_kind=card.pool_kind,
        pool=card.pool,
        valid_from=day_start(card.valid_from),
        valid_until=day_start(card.valid_until) if card.valid_until else None,
        per_gpu_hour=Decimal(card.per_gpu_hour),
    )


def all_rates() -> list[pricing.Rate]:
    return [as_rate(card) for card in RateCard.objects.all()]


def first_open_month() -> date | None:
    """The first month after the latest finalised invoice: rates may change from here on only."""
    latest = Invoice.objects.filter(state=InvoiceState.FINALISED).order_by("-month").values_list("month", flat=True).first()
    return next_month(latest) if latest else None


def _check_not_retroactive(day: date, field: str) -> None:
    opens = first_open_month()
    if opens is not None and day < opens:
        raise BillingError(field, f"{day} lies in a finalised month; rates can change from {opens} on")


def add_rate_card(
    *, gpu_model: str, pool_kind: str, per_gpu_hour: Decimal, valid_from: date,
    valid_until: date | None = None, pool: str = "", note: str = "",
) -> RateCard:  # fmt: skip
    """Create a rate card after checking its amount, its period and that it overlaps no card of its key."""
    card = RateCard(
        gpu_model=gpu_model, pool_kind=pool_kind, pool=pool, per_gpu_hour=per_gpu_hour,
        valid_from=valid_from, valid_until=valid_until, note=note,
    )  # fmt: skip
    with transaction.atomic():
        transaction_lock(RATE_LOCK)  # two concurrent adds must not both pass the overlap check
        _check_not_retroactive(valid_from, "valid_from")
        try:
            pricing.check_rate(as_rate(card), all_rates())
        except pricing.RateCardError as exc:
            raise BillingError(exc.field, exc.message) from None
        card.save()
    return card


def change_rate(
    *, gpu_model: str, pool_kind: str, per_gpu_hour: Decimal, from_day: date, pool: str = "", note: str = ""
) -> RateCard:
    """A new price from `from_day` on: ends the open card of the key that day and starts the new one."""
    with transaction.atomic():
        transaction_lock(RATE_LOCK)
        _check_not_retroactive(from_day, "from_day")
        current = RateCard.objects.filter(
            gpu_model=gpu_model, pool_kind=pool_kind, pool=pool, valid_from__lt=from_day, valid_until__isnull=True
        ).first()
        if current is not None:
            RateCard.objects.filter(pk=current.pk).update(valid_until=from_day)
        return add_rate_card(
            gpu_model=gpu_model, pool_kind=pool_kind, pool=pool, per_gpu_hour=per_gpu_hour, valid_from=from_day, note=note
        )


def month_is_open(day: date) -> bool:
    opens = first_open_month()
    return opens is None or month_of(day_start(day)) >= opens
