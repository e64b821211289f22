"""Money and rate cards: Decimal amounts, one site currency, one rounding rule.

Pure: no ORM, no clock, no I/O.

Rounding rule: each invoice line's amount is GPU-hours x rate, rounded once to the cent with
banker's rounding (ROUND_HALF_EVEN); an invoice total is the sum of its rounded lines, so a
total always equals the sum of the lines a reader sees, to the cent. GPU-seconds are kept exact
(to the microsecond) until that single rounding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

CENT = Decimal("0.01")
SECONDS_PER_HOUR = Decimal(3600)
MAX_RATE = Decimal("100000")  # per GPU-hour; anything above is a typo, not a price


class RateCardError(ValueError):
    """A rate card was refused; `field` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def round_money(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_EVEN)


def line_amount(gpu_seconds: Decimal, rate_per_gpu_hour: Decimal) -> Decimal:
    """The amount of one invoice line: exact GPU-hours x rate, rounded once to the cent."""
    return round_money(gpu_seconds * rate_per_gpu_hour / SECONDS_PER_HOUR)


def total(amounts: Iterable[Decimal]) -> Decimal:
    """An invoice total: the sum of already rounded line amounts (stays exact to the cent)."""
    return sum((round_money(a) for a in amounts), Decimal("0.00"))


def gpu_hours(gpu_seconds: Decimal) -> Decimal:
    return (gpu_seconds / SECONDS_PER_HOUR).quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Rate:
    """A rate card as the pricing core sees it: what it prices, from when until when, how much.

    `pool` empty means every pool of the kind and model; a named pool (e.g. a cloud pool of one
    instance type) takes precedence over the generic card. `valid_until` is exclusive; None is open.
    """

    card_id: int
    gpu_model: str
    pool_kind: str
    pool: str
    valid_from: datetime
    valid_until: datetime | None
    per_gpu_hour: Decimal

    def covers(self, at: datetime) -> bool:
        return self.valid_from <= at and (self.valid_until is None or at < self.valid_until)

    def same_key(self, other: Rate) -> bool:
        return (self.gpu_model, self.pool_kind, self.pool) == (other.gpu_model, other.pool_kind, other.pool)

    def overlaps(self, other: Rate) -> bool:
        ends_after_other_starts = self.valid_until is None or self.valid_until > other.valid_from
        other_ends_after_start = other.valid_until is None or other.valid_until > self.valid_from
        return ends_after_other_starts and other_ends_after_start


def check_rate(new: Rate, existing: Sequence[Rate]) -> None:
    """Refuse a card with a bad amount, an empty period, or a period overlapping a card of the same key."""
    if not Decimal(0) <= new.per_gpu_hour <= MAX_RATE:
        raise RateCardError("per_gpu_hour", f"must be between 0 and {MAX_RATE}, got {new.per_gpu_hour}")
    if new.per_gpu_hour != new.per_gpu_hour.quantize(Decimal("0.0001")):
        raise RateCardError("per_gpu_hour", "at most 4 decimal places")
    if new.valid_until is not None and new.valid_until <= new.valid_from:
        raise RateCardError("valid_until", f"must be after valid_from ({new.valid_from:%Y-%m-%d})")
    for other in existing:
        if other.card_id != new.card_id and new.same_key(other) and new.overlaps(other):
            until = f"{other.valid_until:%Y-%m-%d}" if other.valid_until else "open-ended"
            raise RateCardError(
                "valid_from",
                f"overlaps rate card #{other.card_id} for {other.gpu_model} {other.pool_kind}"
                f"{' ' + other.pool if other.pool else ''} ({other.valid_from:%Y-%m-%d} to {until}); "
                "end that card first or start this one when it ends",
            )


def find_rate(rates: Iterable[Rate], gpu_model: str, pool_kind: str, pool: str, at: datetime) -> Rate | None:
    """The card pricing this model, kind and pool at `at`: a pool's own card first, then the kind's."""
    generic = None
    for rate in rates:
        if rate.gpu_model != gpu_model or rate.pool_kind != pool_kind or not rate.covers(at):
            continue
        if rate.pool == pool:
            return rate
        if rate.pool == "":
            generic = rate
    return generic


def rate_changes(rates: Iterable[Rate], gpu_model: str) -> list[datetime]:
    """Every instant at which some card for this GPU model starts or ends: where usage must be cut."""
    instants = set()
    for rate in rates:
        if rate.gpu_model == gpu_model:
            instants.add(rate.valid_from)
            if rate.valid_until is not None:
                instants.add(rate.valid_until)
    return sorted(instants)


# --- artifact storage -----------------------------------------------------------------------------

BYTES_PER_GB = Decimal(10**9)
SECONDS_PER_STORAGE_MONTH = Decimal(30 * 86400)  # a GB-month: 10⁹ bytes kept for 30 days (docs/artifacts.md)
MAX_STORAGE_RATE = Decimal("10000")  # per GB-month; anything above is a typo, not a price


def gb_months(byte_seconds: Decimal) -> Decimal:
    """Byte-seconds as GB-months, exact."""
    return Decimal(byte_seconds) / (BYTES_PER_GB * SECONDS_PER_STORAGE_MONTH)


def storage_amount(byte_seconds: Decimal, per_gb_month: Decimal) -> Decimal:
    """The amount of one storage line: exact GB-months x rate, rounded once to the cent."""
    return round_money(gb_months(byte_seconds) * per_gb_month)


@dataclass(frozen=True)
class StorageRate:
    """A storage rate card as the pricing core sees it: a price per GB-month over whole UTC days.

    `valid_until` is exclusive; None is open."""

    card_id: int
    valid_from: date
    valid_until: date | None
    per_gb_month: Decimal

    def covers(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_until is None or day < self.valid_until)

    def overlaps(self, other: StorageRate) -> bool:
        return (self.valid_until is None or self.valid_until > other.valid_from) and (
            other.valid_until is None or other.valid_until > self.valid_from
        )


def check_storage_rate(new: StorageRate, existing: Sequence[StorageRate]) -> None:
    """Refuse a storage card with a bad amount, an empty period, or a period overlapping another card."""
    if not Decimal(0) <= new.per_gb_month <= MAX_STORAGE_RATE:
        raise RateCardError("per_gb_month", f"must be between 0 and {MAX_STORAGE_RATE}, got {new.per_gb_month}")
    if new.per_gb_month != new.per_gb_month.quantize(Decimal("0.0001")):
        raise RateCardError("per_gb_month", "at most 4 decimal places")
    if new.valid_until is not None and new.valid_until <= new.valid_from:
        raise RateCardError("valid_until", f"must be after valid_from ({new.valid_from:%Y-%m-%d})")
    for other in existing:
        if other.card_id != new.card_id and new.overlaps(other):
            until = f"{other.valid_until:%Y-%m-%d}" if other.valid_until else "open-ended"
            raise RateCardError(
                "valid_from",
                f"overlaps storage rate card #{other.card_id} ({other.valid_from:%Y-%m-%d} to {until}); "
                "end that card first or start this one when it ends",
            )


def storage_rate_on(rates: Iterable[StorageRate], day: date) -> StorageRate | None:
    return next((r for r in rates if r.covers(day)), None)


def byte_seconds_by_day(kept_bytes: int, start: datetime, end: datetime) -> list[tuple[date, Decimal]]:
    """`kept_bytes` held from `start` to `end` (aware, UTC), cut at UTC midnights: (day, byte-seconds) per day."""
    pieces: list[tuple[date, Decimal]] = []
    at = start.astimezone(UTC)
    end = end.astimezone(UTC)
    while at < end:
        midnight = datetime.combine(at.date() + timedelta(days=1), time(), tzinfo=UTC)
        until = min(midnight, end)
        seconds = Decimal((until - at).total_seconds())
        pieces.append((at.date(), Decimal(kept_bytes) * seconds))
        at = until
    return pieces


def storage_charges(days: Iterable[tuple[date, Decimal]], rates: Sequence[StorageRate]) -> list[tuple[StorageRate, Decimal]]:
    """Byte-seconds per day grouped by the card in force that day: (card, byte-seconds), in card order.
    Days no card covers are not billed (storage is billed only where a rate is set)."""
    totals: dict[int, Decimal] = {}
    by_id = {r.card_id: r for r in rates}
    for day, byte_seconds in days:
        rate = storage_rate_on(rates, day)
        if rate is not None:
            totals[rate.card_id] = totals.get(rate.card_id, Decimal(0)) + byte_seconds
    return [(by_id[i], totals[i]) for i in sorted(totals, key=lambda i: by_id[i].valid_from) if totals[i] > 0]
