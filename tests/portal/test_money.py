"""Money reads as money: rounded to the cent, grouped by the locale, with its currency."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.template import Context, Template
from django.utils import translation

from portal.templatetags.money import format_money


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (Decimal("10.5500000000000"), "10.55 EUR"),
        (Decimal("1234567.891"), "1,234,567.89 EUR"),
        (Decimal("-12.5"), "-12.50 EUR"),
        (Decimal("0.125"), "0.12 EUR"),  # half to even, as invoices round
        (3, "3.00 EUR"),
        (None, "—"),
    ],
)
def test_amounts_are_rounded_grouped_and_labelled(amount: object, shown: str) -> None:
    with translation.override("en-gb"):
        assert format_money(amount, "EUR") == shown


def test_templates_have_the_filter_without_loading_it() -> None:
    with translation.override("en-gb"):
        assert Template("{{ x|money:'USD' }}").render(Context({"x": Decimal("9.999")})) == "10.00 USD"
