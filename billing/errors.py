"""Errors of the billing service layer; each names the field (or object) at fault."""

from __future__ import annotations


class BillingError(ValueError):
    """A billing request was refused; `field` names what is wrong and `message` says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvoiceFinalised(BillingError):
    """The invoice is finalised: it can be read and exported, never changed."""

    def __init__(self, number: str) -> None:
        super().__init__("invoice", f"{number} is finalised and cannot be changed; bill a correction on a later month")
