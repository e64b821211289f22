"""The nightly beat task backs up to BACKUP_TARGET and keeps BACKUP_KEEP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_django import Settings

from portal import backup
from portal.tasks import nightly_backup
from tests.backup.conftest import needs_postgres

pytestmark = needs_postgres


def test_it_writes_a_backup_to_the_configured_target(seeded: dict[str, Any], settings: Settings, tmp_path: Path) -> None:
    settings.BACKUP_TARGET = str(tmp_path / "nightly")
    settings.BACKUP_KEEP = 3

    report = nightly_backup.delay().get()

    assert backup.inventory(backup.LocalDirectory(tmp_path / "nightly")) == ([report["backup"]], [])
    assert report["pruned"] == [] and report["location"] == str(tmp_path / "nightly")
