"""Rate changes: a job running across a change is split and priced at both rates; never retroactive."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal

import pytest

from billing import services
from billing.errors import BillingError
from billing.models import RateCard
from jobs.models import Job
from portal.models import Team, User
from tests.billing.conftest import at


def test_a_rate_change_in_the_middle_of_a_job_prices_each_side_at_its_rate(
    vision: Team, alice: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]
) -> None:
    job_with_history(vision, alice, [("2025-03-14 18:00", "admitted"), ("2025-03-15 06:00", "succeeded")], gpus=4)
    services.change_rate(gpu_model="a100", pool_kind="onprem", per_gpu_hour=Decimal("3.00"), from_day=date(2025, 3, 15))
    services.meter_month(date(2025, 3, 1), now=at("2025-04-02 00:00"))
    invoice = services.generate_invoice(vision.pk, date(2025, 3, 1))
    assert [(line.rate, line.gpu_seconds, line.amount) for line in invoice.lines.order_by("position")] == [
        (Decimal("2.0000"), Decimal(4 * 6 * 3600), Decimal("48.00")),
        (Decimal("3.0000"), Decimal(4 * 6 * 3600), Decimal("72.00")),
    ]
    assert invoice.total == Decimal("120.00")


def test_a_rate_change_reprices_usage_already_metered(
    vision: Team, alice: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]
) -> None:
    job_with_history(vision, alice, [("2025-03-14 18:00", "admitted"), ("2025-03-15 06:00", "succeeded")])
    services.meter_month(date(2025, 3, 1), now=at("2025-04-02 00:00"))
    services.change_rate(gpu_model="a100", pool_kind="onprem", per_gpu_hour=Decimal("3.00"), from_day=date(2025, 3, 15))
    assert services.generate_invoice(vision.pk, date(2025, 3, 1)).total == Decimal("30.00")  # 6 h at 2.00 + 6 h at 3.00


def test_the_change_closes_the_old_card_on_its_date(rates: dict[str, RateCard]) -> None:
    services.change_rate(gpu_model="a100", pool_kind="onprem", per_gpu_hour=Decimal("3.00"), from_day=date(2025, 3, 15))
    assert list(RateCard.objects.filter(gpu_model="a100", pool_kind="onprem").values_list("valid_from", "valid_until")) == [
        (date(2024, 1, 1), date(2025, 3, 15)), (date(2025, 3, 15), None),
    ]  # fmt: skip


def test_an_overlapping_card_is_rejected_with_a_clear_error(rates: dict[str, RateCard]) -> None:
    with pytest.raises(BillingError) as caught:
        services.add_rate_card(gpu_model="a100", pool_kind="onprem", per_gpu_hour=Decimal(1), valid_from=date(2025, 1, 1))
    assert caught.value.field == "valid_from"
    assert f"overlaps rate card #{rates['a100-onprem'].pk} for a100 onprem (2024-01-01 to open-ended)" in caught.value.message
    assert RateCard.objects.count() == 3


def test_a_change_never_reaches_back_into_a_finalised_month(
    vision: Team, alice: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]
) -> None:
    job_with_history(vision, alice, [("2025-03-14 18:00", "admitted"), ("2025-03-15 06:00", "succeeded")])
    services.meter_month(date(2025, 3, 1), now=at("2025-04-02 00:00"))
    services.finalise(services.generate_invoice(vision.pk, date(2025, 3, 1)).pk, "fiona", now=at("2025-04-02 00:00"))
    with pytest.raises(BillingError, match="lies in a finalised month; rates can change from 2025-04-01 on") as caught:
        services.change_rate(gpu_model="a100", pool_kind="onprem", per_gpu_hour=Decimal(9), from_day=date(2025, 3, 20))
    assert caught.value.field == "from_day"
    services.change_rate(gpu_model="a100", pool_kind="onprem", per_gpu_hour=Decimal(9), from_day=date(2025, 4, 1))
