"""The pure rules: where a job's files go, which paths are allowed, retention bounds, storage cost."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from artifacts import layout
from artifacts.layout import ArtifactInputError, JobLayout


def test_it_puts_each_job_under_its_team_and_id() -> None:
    where = JobLayout("vision", 42)
    assert (where.prefix, where.output, where.checkpoints) == ("vision/42/", "vision/42/output/", "vision/42/checkpoints/")
    assert layout.team_prefix("vision") == "vision/"


@pytest.mark.parametrize("path", ["output/model.pt", "checkpoints/step-100/weights.bin", "output/a b.txt"])
def test_it_accepts_files_below_output_or_checkpoints(path: str) -> None:
    assert layout.clean_path(path) == path


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("output/../../render/7/output/x", "'..'"),
        ("../x", "'..'"),
        ("/etc/passwd", "relative"),
        ("output\\..\\x", "backslashes"),
        ("output//x", "empty segments"),
        ("output/./x", "'.'"),
        ("logs/x", "output/ or checkpoints/"),
        ("output", "output/ or checkpoints/"),
        ("output/x\x00", "control characters"),
        ("", "required"),
        ("output/" + "x" * 1100, "at most 1024 characters"),
    ],
)
def test_it_refuses_paths_that_could_leave_the_jobs_location_naming_the_field(path: str, says: str) -> None:
    with pytest.raises(ArtifactInputError) as refused:
        layout.clean_path(path)
    assert refused.value.field == "path" and says in refused.value.message


def test_retention_is_whole_days_within_its_bounds() -> None:
    assert layout.check_retention(30) == 30 and layout.check_retention("7") == 7
    assert layout.check_retention(None) is None and layout.check_retention("") is None
    for bad in (0, 3651, -1, "a week", 2.5, True):
        with pytest.raises(ArtifactInputError) as refused:
            layout.check_retention(bad)
        assert refused.value.field == "retention_days" and "1" in refused.value.message and "3650" in refused.value.message


def test_an_upload_declares_its_size_within_the_limit() -> None:
    assert layout.check_upload_size(10, 100) == 10
    for bad in (101, -1, "10", None, True):
        with pytest.raises(ArtifactInputError) as refused:
            layout.check_upload_size(bad, 100)
        assert refused.value.field == "size" and "100" in refused.value.message


def test_storage_costs_by_the_gb_month() -> None:
    assert layout.monthly_storage_cost(250 * 10**9, Decimal("0.02")) == Decimal("5.00")
    assert layout.storage_cost(250 * 10**9, Decimal("0.02"), Decimal("15")) == Decimal("2.50")
    assert layout.monthly_storage_cost(0, Decimal("0.02")) == Decimal("0.00")


def test_the_retention_cutoff_is_that_many_days_back() -> None:
    now = datetime(2026, 3, 31, 12, tzinfo=UTC)
    assert layout.expired_before(now, 30) == datetime(2026, 3, 1, 12, tzinfo=UTC)
