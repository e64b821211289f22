"""Pruning keeps the newest N complete backups, never the one just written, never an incomplete one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from portal import backup
from tests.backup.conftest import on_postgres


def fake_backup(root: Path, name: str, complete: bool = True) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "database.dump").write_bytes(b"dump")
    if complete:
        (root / name / backup.MANIFEST).write_text("{}")


def test_it_keeps_the_newest_n_and_leaves_incomplete_ones_alone(tmp_path: Path) -> None:
    for day in range(1, 6):
        fake_backup(tmp_path, f"backup-2026010{day}T013000Z")
    fake_backup(tmp_path, "backup-20251231T013000Z", complete=False)
    said: list[str] = []

    result = backup.prune(backup.LocalDirectory(tmp_path), 3, say=said.append)

    assert result.deleted == ["backup-20260101T013000Z", "backup-20260102T013000Z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "backup-20251231T013000Z", "backup-20260103T013000Z", "backup-20260104T013000Z", "backup-20260105T013000Z",
    ]  # fmt: skip
    assert result.incomplete == ["backup-20251231T013000Z"]
    assert any("left alone: backup-20251231T013000Z has no manifest.json" in line for line in said)


def test_a_dry_run_deletes_nothing(tmp_path: Path) -> None:
    for day in range(1, 4):
        fake_backup(tmp_path, f"backup-2026010{day}T013000Z")

    result = backup.prune(backup.LocalDirectory(tmp_path), 1, dry_run=True)

    assert len(result.deleted) == 2 and len(list(tmp_path.iterdir())) == 3


def test_the_backup_just_written_is_kept_even_if_older_ones_look_newer(tmp_path: Path) -> None:
    fake_backup(tmp_path, "backup-20990101T000000Z")  # a clock that was once wrong
    fake_backup(tmp_path, "backup-20260101T000000Z")

    result = backup.prune(backup.LocalDirectory(tmp_path), 1, protect="backup-20260101T000000Z")

    assert result.deleted == [] and set(result.kept) == {"backup-20990101T000000Z", "backup-20260101T000000Z"}


@pytest.mark.usefixtures("seeded")
@on_postgres
def test_each_backup_prunes_to_keep(tmp_path: Path) -> None:
    target = backup.LocalDirectory(tmp_path)
    start = datetime(2026, 1, 1, 1, 30, tzinfo=UTC)
    names = [backup.create_backup(target, keep=2, now=start + timedelta(days=d)).name for d in range(3)]

    assert backup.inventory(target) == (names[1:], [])
