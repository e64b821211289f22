"""The billing app's only write path. Views, API, admin and tasks call these and nothing else writes.

`team_restrictions(team_id)` is what the admission scheduler reads to apply budget actions.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from django.db import transaction

from billing.models import RateCard
from billing.services import rates, usage
from billing.services.budgets import evaluate_all, evaluate_budget, lift_restriction, set_budget, status, team_restrictions
from billing.services.invoices import add_adjustment, draft_month, finalise, generate_invoice, previous_month
from billing.services.storage import add_storage_rate
from billing.services.usage import meter_job, meter_month, meter_recent

__all__ = [
    "add_adjustment", "add_rate_card", "add_storage_rate", "change_rate", "draft_month", "evaluate_all", "evaluate_budget",
    "finalise", "generate_invoice", "lift_restriction", "meter_job", "meter_month", "meter_recent",
    "previous_month", "set_budget", "status", "team_restrictions",
]  # fmt: skip


def add_rate_card(
    *, gpu_model: str, pool_kind: str, per_gpu_hour: Decimal, valid_from: date,
    valid_until: date | None = None, pool: str = "", note: str = "",
) -> RateCard:  # fmt: skip
    """Create a rate card and re-price the open months' usage it covers."""
    with transaction.atomic():
        card = rates.add_rate_card(
            gpu_model=gpu_model, pool_kind=pool_kind, per_gpu_hour=per_gpu_hour, valid_from=valid_from,
            valid_until=valid_until, pool=pool, note=note,
        )  # fmt: skip
        usage.reprice_from(valid_from)
    return card


def change_rate(
    *, gpu_model: str, pool_kind: str, per_gpu_hour: Decimal, from_day: date, pool: str = "", note: str = ""
) -> RateCard:
    """A new price from a day on (never inside a finalised month); re-prices open months' usage."""
    with transaction.atomic():
        card = rates.change_rate(
            gpu_model=gpu_model, pool_kind=pool_kind, per_gpu_hour=per_gpu_hour, from_day=from_day, pool=pool, note=note
        )
        usage.reprice_from(from_day)
    return card
