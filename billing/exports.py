"""Invoice exports: CSV for spreadsheets and scripts, PDF for filing."""

from __future__ import annotations

import io
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from fpdf import FPDF
from fpdf.enums import XPos, YPos

from billing import pricing
from billing.metering import month_bounds
from billing.models import Invoice
from billing.services.invoices import invoice_rows
from portal.csv_export import safe_writer

CSV_COLUMNS = ["invoice", "team", "month", "state", "currency", "line", "kind", "description", "gpu_model", "pool",
               "pool_kind", "gpu_hours", "used_gpu_hours", "rate_per_gpu_hour", "amount"]  # fmt: skip
ROUNDING_NOTE = "Amounts: GPU-hours x rate, rounded once per line to the cent (half to even); the total is the sum of the lines."


def csv_text(invoices: list[Invoice]) -> str:
    """One row per invoice line, then a total row per invoice; money as plain decimals, no symbols."""
    out = io.StringIO()
    writer = safe_writer(out)
    writer.writerow(CSV_COLUMNS)
    for invoice in invoices:
        head = [invoice.number, invoice.team.slug, f"{invoice.month:%Y-%m}", invoice.state, invoice.currency]
        for row in invoice_rows(invoice):
            writer.writerow([*head, row["position"], row["kind"], row["description"], row["gpu_model"], row["pool"],
                             row["pool_kind"], _plain(row["gpu_hours"]), _plain(row["used_gpu_hours"]), _plain(row["rate"]),
                             _plain(row["amount"])])  # fmt: skip
        writer.writerow([*head, "", "total", "", "", "", "", "", "", "", _plain(invoice.total)])
    return out.getvalue()


def _plain(value: Decimal | None) -> str:
    return "" if value is None else f"{value:f}"


def _latin(text: str) -> str:
    """The PDF's built-in fonts cover Latin-1 only; anything else is replaced rather than failing the export."""
    return text.encode("latin-1", "replace").decode("latin-1")


def _money(value: Decimal | None) -> str:
    return "" if value is None else f"{value:,.2f}"


class InvoicePdf(FPDF):
    """An A4 invoice page: issuer, team, period, lines, total, and how amounts were rounded."""

    def __init__(self, invoice: Invoice) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.invoice = invoice
        self.set_auto_page_break(auto=True, margin=22)
        self.set_margins(18, 18, 18)

    def footer(self) -> None:
        self.set_y(-16)
        self.set_font("Helvetica", size=7.5)
        self.set_text_color(110, 110, 110)
        self.cell(0, 4, _latin(ROUNDING_NOTE), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.cell(0, 4, f"{self.invoice.number} - page {self.page_no()}/{{nb}}", align="R")


def pdf_bytes(invoice: Invoice) -> bytes:
    pdf = InvoicePdf(invoice)
    pdf.alias_nb_pages()
    pdf.add_page()
    _header(pdf, invoice)
    _parties(pdf, invoice)
    _lines(pdf, invoice, invoice_rows(invoice))
    _totals(pdf, invoice)
    return bytes(pdf.output())


def _header(pdf: FPDF, invoice: Invoice) -> None:
    issuer = str(getattr(settings, "BILLING_ISSUER", "GPU Grid Portal"))
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(110, 9, _latin(issuer))
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 9, "INVOICE" if invoice.is_finalised else "DRAFT INVOICE", align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=9)
    pdf.set_text_color(90, 90, 90)
    pdf.cell(110, 5, "GPU compute charges")
    pdf.cell(0, 5, invoice.number, align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(0, 0, 0)
    pdf.ln(6)
    pdf.set_draw_color(200, 200, 200)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
    pdf.ln(5)


def _parties(pdf: FPDF, invoice: Invoice) -> None:
    start, end = month_bounds(invoice.month)
    facts: list[tuple[str, str]] = [
        ("Billed to", f"{invoice.team.name} ({invoice.team.slug})"),
        ("Period", f"{start:%d %B %Y} - {end - timedelta(days=1):%d %B %Y}"),
        ("Status", "Finalised" if invoice.is_finalised else "Draft - not for payment"),
        ("Issued", f"{(invoice.finalised_at or invoice.generated_at):%d %B %Y}"),
        ("Currency", invoice.currency),
    ]
    for label, value in facts:
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(32, 5.5, label)
        pdf.set_font("Helvetica", size=9)
        pdf.cell(0, 5.5, _latin(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(6)


KIND_LABELS = {"onprem": "On-premises", "cloud": "Cloud burst", "": ""}
COLUMNS: list[tuple[str, float, str]] = [("#", 8, "L"), ("Description", 62, "L"), ("Pool kind", 24, "L"),
                                         ("GPU-hours", 24, "R"), ("Rate / GPU-h", 25, "R"), ("Amount", 31, "R")]  # fmt: skip


def _lines(pdf: FPDF, invoice: Invoice, rows: list[dict[str, Any]]) -> None:
    pdf.set_font("Helvetica", "B", 8.5)
    pdf.set_fill_color(238, 242, 247)
    for title, width, align in COLUMNS:
        pdf.cell(width, 7, title, align=align, fill=True)
    pdf.ln(7)
    pdf.set_font("Helvetica", size=8.5)
    for row in rows or [
        {
            "position": "",
            "description": "No GPU usage this month",
            "pool_kind": "",
            "gpu_hours": None,
            "rate": None,
            "amount": Decimal(0),
        }
    ]:
        cells = [
            str(row["position"]),
            row["description"],
            KIND_LABELS.get(row["pool_kind"], row["pool_kind"]),
            _hours(row["gpu_hours"]),
            _rate(row["rate"]),
            _money(row["amount"]),
        ]
        for (_, width, align), text in zip(COLUMNS, cells, strict=True):
            pdf.cell(width, 6.5, _latin(text)[:48], align=align, border="B")
        pdf.ln(6.5)


def _rate(value: Decimal | None) -> str:
    """Rates may carry up to 4 decimals; show them all when they matter, so the arithmetic can be checked."""
    if value is None:
        return ""
    return f"{value:,.2f}" if value == value.quantize(Decimal("0.01")) else f"{value:,.4f}"


def _hours(value: Decimal | None) -> str:
    return "" if value is None else f"{value:,.2f}"


def _totals(pdf: FPDF, invoice: Invoice) -> None:
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(143, 8, f"Total ({invoice.currency})", align="R")
    pdf.cell(31, 8, _money(invoice.total), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    measured = [line for line in invoice.lines.all() if line.used_gpu_seconds is not None]
    held = sum((line.gpu_seconds for line in measured), Decimal(0))
    used = [line.used_gpu_seconds for line in measured if line.used_gpu_seconds is not None]
    if held:
        pdf.ln(4)
        pdf.set_font("Helvetica", size=8.5)
        busy = sum(used, Decimal(0))
        pdf.multi_cell(0, 5, _latin(
            f"GPU efficiency: {pricing.gpu_hours(busy):,.2f} of {pricing.gpu_hours(held):,.2f} allocated GPU-hours were busy "
            f"({busy * 100 / held:.0f} %) on the lines GPU telemetry measured."
        ))  # fmt: skip
