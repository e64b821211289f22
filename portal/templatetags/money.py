"""`{{ amount|money }}`: money as people read it, in the site's locale and currency: "1,234.56 EUR"."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from django import template
from django.conf import settings
from django.utils.formats import number_format

register = template.Library()

SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "CHF": "CHF", "JPY": "¥"}


def format_money(amount: object, currency: str | None = None, places: int = 2) -> str:
    """Rounded half-to-even to `places` (cents by default), grouped as the active locale groups numbers,
    followed by the ISO code; '—' for nothing."""
    if amount is None or amount == "":
        return "—"
    try:
        value = Decimal(str(amount)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    except (InvalidOperation, ValueError):
        return str(amount)
    code = currency or str(getattr(settings, "BILLING_CURRENCY", "EUR"))
    return f"{number_format(value, places, use_l10n=True, force_grouping=True)} {code}"


@register.filter(name="money")
def money(amount: object, currency: str | None = None) -> str:
    return format_money(amount, currency)


@register.filter(name="rate")
def rate(amount: object, currency: str | None = None) -> str:
    """A price per unit keeps up to four decimals (cloud prices such as 5.672 per hour)."""
    return format_money(amount, currency, places=4 if Decimal(str(amount or 0)) % Decimal("0.01") else 2)
