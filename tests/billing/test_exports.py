"""CSV and PDF exports of an invoice."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from billing import exports, services
from billing.models import Invoice, RateCard
from billing.services.usage import record_utilisation
from jobs.models import Job
from portal.models import Team, User
from tests.billing.conftest import at

MARCH = date(2025, 3, 1)


@pytest.fixture
def invoice(vision: Team, alice: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]) -> Invoice:
    a = job_with_history(vision, alice, [("2025-03-03 00:00", "admitted"), ("2025-03-03 10:00", "succeeded")], gpus=2)
    job_with_history(
        vision, alice, [("2025-03-04 00:00", "admitted"), ("2025-03-04 03:00", "succeeded")], gpu_model="h100", pool="onprem-h100"
    )
    job_with_history(vision, alice, [("2025-03-05 00:00", "admitted"), ("2025-03-05 01:00", "succeeded")], pool="burst-a100")
    services.meter_month(MARCH, now=at("2025-04-02 00:00"))
    record_utilisation(a.pk, 0.6)
    return services.finalise(services.generate_invoice(vision.pk, MARCH).pk, "fiona", now=at("2025-04-02 00:00"))


def test_csv_has_a_row_per_line_and_a_total_row(invoice: Invoice) -> None:
    rows = list(csv.DictReader(io.StringIO(exports.csv_text([invoice]))))
    assert [(r["pool"], r["gpu_hours"], r["rate_per_gpu_hour"], r["amount"]) for r in rows] == [
        ("burst-a100", "1.0000", "3.5000", "3.50"),
        ("onprem-a100", "20.0000", "2.0000", "40.00"),
        ("onprem-h100", "3.0000", "4.0000", "12.00"),
        ("", "", "", "55.50"),
    ]
    assert rows[1]["used_gpu_hours"] == "12.0000"
    assert {r["currency"] for r in rows} == {"EUR"} and {r["state"] for r in rows} == {"finalised"}
    assert sum(Decimal(r["amount"]) for r in rows[:-1]) == Decimal(rows[-1]["amount"])


def test_the_pdf_is_a_real_one_page_invoice(invoice: Invoice, tmp_path: Path) -> None:
    data = exports.pdf_bytes(invoice)
    assert data.startswith(b"%PDF-1.") and data.rstrip().endswith(b"%%EOF")
    if shutil.which("pdftotext") is None:
        pytest.skip("poppler-utils (pdftotext) is not installed")
    path = tmp_path / "invoice.pdf"
    path.write_bytes(data)
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout
    for expected in ("INVOICE", invoice.number, "Vision (vision)", "01 March 2025 - 31 March 2025", "onprem-h100", "55.50",
                     "Total (EUR)", "12.00 of 20.00 allocated GPU-hours were busy"):  # fmt: skip
        assert expected in text
    pages = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    assert "Pages:           1" in pages and "A4" in pages
