"""The pure pricing core: Decimal money, one rounding rule, rate-card checks and lookup."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing import pricing
from billing.pricing import Rate, RateCardError
from tests.billing.conftest import at


def rate(card_id: int, start: str, until: str | None, per_hour: str = "2", pool: str = "", kind: str = "onprem") -> Rate:
    return Rate(card_id, "a100", kind, pool, at(start), at(until) if until else None, Decimal(per_hour))


def test_line_amounts_round_half_even_to_the_cent() -> None:
    # 0.5 cent cases: 1.125 → 1.12 (even), 1.135 → 1.14 (even)
    assert pricing.line_amount(Decimal(3600), Decimal("1.125")) == Decimal("1.12")
    assert pricing.line_amount(Decimal(3600), Decimal("1.135")) == Decimal("1.14")
    assert pricing.line_amount(Decimal(1), Decimal("2.00")) == Decimal("0.00")


def test_a_total_is_the_sum_of_rounded_lines_to_the_cent() -> None:
    lines = [pricing.line_amount(Decimal(1800), Decimal("0.0333")) for _ in range(3)]  # each 0.01665 → 0.02
    assert pricing.total(lines) == Decimal("0.06") == sum(lines)


def test_overlapping_cards_of_the_same_key_are_rejected_with_a_clear_error() -> None:
    existing = [rate(1, "2025-01-01 00:00", "2025-06-01 00:00")]
    with pytest.raises(RateCardError) as caught:
        pricing.check_rate(rate(0, "2025-05-01 00:00", None), existing)
    assert caught.value.field == "valid_from"
    assert "overlaps rate card #1" in str(caught.value) and "2025-01-01 to 2025-06-01" in str(caught.value)


def test_adjacent_cards_and_cards_of_other_keys_do_not_overlap() -> None:
    existing = [rate(1, "2025-01-01 00:00", "2025-06-01 00:00"), rate(2, "2025-01-01 00:00", None, kind="cloud")]
    pricing.check_rate(rate(0, "2025-06-01 00:00", None), existing)
    pricing.check_rate(rate(0, "2025-01-01 00:00", None, pool="burst-x"), existing)


def test_an_open_card_overlaps_any_later_card() -> None:
    with pytest.raises(RateCardError):
        pricing.check_rate(rate(0, "2030-01-01 00:00", None), [rate(1, "2025-01-01 00:00", None)])


@pytest.mark.parametrize(
    ("bad", "field"),
    [(rate(0, "2025-01-01 00:00", None, per_hour="-1"), "per_gpu_hour"), (rate(0, "2025-01-01 00:00", None, per_hour="0.00001"), "per_gpu_hour"),
     (rate(0, "2025-02-01 00:00", "2025-01-01 00:00"), "valid_until"), (rate(0, "2025-01-01 00:00", None, per_hour="100001"), "per_gpu_hour")],
)  # fmt: skip
def test_bad_cards_name_the_field(bad: Rate, field: str) -> None:
    with pytest.raises(RateCardError) as caught:
        pricing.check_rate(bad, [])
    assert caught.value.field == field


def test_a_pools_own_card_beats_the_kinds_card() -> None:
    cards = [rate(1, "2025-01-01 00:00", None, "2"), rate(2, "2025-01-01 00:00", None, "5", pool="burst-p4d")]
    pools_own = pricing.find_rate(cards, "a100", "onprem", "burst-p4d", at("2025-03-01 00:00"))
    kinds = pricing.find_rate(cards, "a100", "onprem", "other", at("2025-03-01 00:00"))
    assert pools_own is not None and pools_own.card_id == 2
    assert kinds is not None and kinds.card_id == 1
    assert pricing.find_rate(cards, "a100", "onprem", "other", at("2024-03-01 00:00")) is None
    assert pricing.find_rate(cards, "h100", "onprem", "other", at("2025-03-01 00:00")) is None


def test_rate_changes_are_every_start_and_end_of_the_models_cards() -> None:
    cards = [rate(1, "2025-01-01 00:00", "2025-03-15 00:00"), rate(2, "2025-03-15 00:00", None)]
    assert pricing.rate_changes(cards, "a100") == [at("2025-01-01 00:00"), at("2025-03-15 00:00")]
    assert pricing.rate_changes(cards, "h100") == []
