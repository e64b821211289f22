"""The billing page out of the box: the month picker reaches this month and months with usage; finance adds rate cards there."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal

from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone

from billing import services
from billing.metering import month_of
from billing.models import RateCard, StorageRateCard
from billing.views import picker_months
from cluster.models import Pool
from jobs.models import Job
from portal.models import Team, User

CARD = {"gpu_model": "a100", "pool_kind": "onprem", "per_gpu_hour": "2.25", "valid_from": "2024-01-01"}


def _messages(response: object) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]  # type: ignore[attr-defined]


def test_the_month_picker_offers_the_current_month_and_months_with_usage(
    web: Callable[[User | None], Client],
    fiona: User,
    vision: Team,
    alice: User,
    rates: dict[str, RateCard],
    job_with_history: Callable[..., Job],
) -> None:
    job_with_history(vision, alice, [("2021-06-03 00:00", "admitted"), ("2021-06-03 10:00", "succeeded")])
    services.meter_month(date(2021, 6, 1))
    this_month = month_of(timezone.now())
    months = picker_months(this_month)
    assert months[0] == this_month  # newest first, and the month in progress is there to draft
    assert date(2021, 6, 1) in months  # older than two years, but it has usage
    page = web(fiona).get("/billing/").content.decode()
    assert f'<option value="{this_month:%Y-%m}"' in page
    assert '<option value="2021-06"' in page


def test_finance_adds_a_rate_card_on_the_billing_page(
    web: Callable[[User | None], Client], fiona: User, pools: dict[str, Pool]
) -> None:
    page = web(fiona).get("/billing/")
    assert b'id="rate-card-form"' in page.content
    response = web(fiona).post("/billing/rate-cards/", {**CARD, "month": "2024-01"})
    assert response.status_code == 302 and response["Location"] == "/billing/?month=2024-01"
    card = RateCard.objects.get()
    assert (card.gpu_model, card.pool_kind, card.per_gpu_hour, card.valid_from) == (
        "a100",
        "onprem",
        Decimal("2.25"),
        date(2024, 1, 1),
    )
    assert b"2.2500" in web(fiona).get("/billing/").content


def test_rate_card_errors_name_the_field(web: Callable[[User | None], Client], fiona: User, pools: dict[str, Pool]) -> None:
    client = web(fiona)
    bad_price = client.post("/billing/rate-cards/", {**CARD, "per_gpu_hour": "-1"})
    assert any(m.startswith("per_gpu_hour:") for m in _messages(bad_price))
    bad_model = client.post("/billing/rate-cards/", {**CARD, "gpu_model": "tpu"})
    assert any(m.startswith("gpu_model:") for m in _messages(bad_model))
    client.post("/billing/rate-cards/", CARD)
    overlap = client.post("/billing/rate-cards/", {**CARD, "per_gpu_hour": "3"})  # the service's own check
    assert any(m.startswith("valid_from:") or m.startswith("valid_until:") for m in _messages(overlap)), _messages(overlap)
    assert RateCard.objects.count() == 1


def test_only_finance_adds_rate_cards(
    web: Callable[[User | None], Client], bob: User, alice: User, carol: User, olivia: User, pools: dict[str, Pool]
) -> None:
    for user in (bob, alice, carol, olivia):  # the lead, researchers, an outsider, the operator
        assert web(user).post("/billing/rate-cards/", CARD).status_code == 403
    assert web(None).post("/billing/rate-cards/", CARD).status_code == 302  # to sign-in
    assert web(bob).get("/billing/rate-cards/").status_code in (403, 405)
    assert not RateCard.objects.exists()


STORAGE = {"per_gb_month": "0.0230", "valid_from": "2024-01-01", "note": "object store"}


def test_finance_adds_a_storage_rate_on_the_billing_page_and_errors_name_the_field(
    web: Callable[[User | None], Client], fiona: User, pools: dict[str, Pool]
) -> None:
    client = web(fiona)
    assert b'id="storage-rate-form"' in client.get("/billing/").content
    response = client.post("/billing/storage-rates/", {**STORAGE, "month": "2024-01"})
    assert response.status_code == 302 and response["Location"] == "/billing/?month=2024-01"
    assert [f"{m}" for m in _messages(response)] == ["Storage rate added: 0.0230/GB-month from 2024-01-01."]
    card = StorageRateCard.objects.get()
    assert (card.per_gb_month, card.valid_from, card.note) == (Decimal("0.0230"), date(2024, 1, 1), "object store")
    assert b"0.0230" in client.get("/billing/").content
    negative = client.post("/billing/storage-rates/", {**STORAGE, "per_gb_month": "-1"})
    assert any(m.startswith("per_gb_month:") for m in _messages(negative))
    overlap = client.post("/billing/storage-rates/", {**STORAGE, "per_gb_month": "0.05"})  # the service's own check
    assert any(m.startswith("valid_from:") or m.startswith("valid_until:") for m in _messages(overlap)), _messages(overlap)
    assert StorageRateCard.objects.count() == 1


def test_only_finance_adds_storage_rates(
    web: Callable[[User | None], Client], bob: User, alice: User, carol: User, olivia: User, pools: dict[str, Pool]
) -> None:
    for user in (bob, alice, carol, olivia):  # the lead, researchers, an outsider, the operator
        assert web(user).post("/billing/storage-rates/", STORAGE).status_code == 403
    assert web(None).post("/billing/storage-rates/", STORAGE).status_code == 302  # to sign-in
    assert not StorageRateCard.objects.exists()
