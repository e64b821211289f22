"""No CSV export can carry a spreadsheet formula."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest

from portal.csv_export import neutralise, safe_writer
from portal.models import User
from quotas import services as quota_services

ROOT = Path(__file__).resolve().parents[2]
APPS = ("portal", "grid", "jobs", "quotas", "billing", "bursting", "cluster")


@pytest.mark.parametrize("cell", ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\r=1", "=1"])
def test_a_cell_a_spreadsheet_would_evaluate_is_written_as_text(cell: str) -> None:
    assert neutralise(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["-12.50", "+3", "42", "plain text", "a=b", "", 7])
def test_numbers_and_ordinary_text_are_written_unchanged(cell: object) -> None:
    assert neutralise(cell) == cell


def test_every_csv_export_of_the_portal_writes_through_the_safe_writer() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for app in APPS
        for path in (ROOT / app).rglob("*.py")
        if path.name != "csv_export.py" and re.search(r"csv\.(writer|DictWriter)\(", path.read_text())
    ]
    assert offenders == []


def test_a_formula_in_a_quota_reason_reaches_the_audit_csv_as_text(web: Any, bob: User, olivia: User, grid: Any) -> None:
    team = bob.teams.get()
    quota_services.set_quota(bob, team=team, gpu_model="a100", changes={"limit": 4}, reason='=HYPERLINK("http://evil","x")')
    response = web(olivia).get("/console/audit.csv")
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    reasons = [row[-1] for row in rows[1:]]
    assert '\'=HYPERLINK("http://evil","x")' in reasons
    assert not any(cell.startswith("=") for row in rows for cell in row)


def test_the_writer_keeps_the_row_shape() -> None:
    out = io.StringIO()
    safe_writer(out).writerows([["a", "=b", "-1.5"], ["@c", 2, None]])
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [["a", "'=b", "-1.5"], ["'@c", "2", ""]]
