"""SQLite: manage.py backup and restore in a portal of its own (the test database is PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from portal.backup import DatabaseConfig, database
from tests.backup.conftest import SqlitePortal


def test_it_backs_up_and_restores_a_sqlite_portal(sqlite_portal: SqlitePortal, tmp_path: Path) -> None:
    backups, restored = tmp_path / "backups", tmp_path / "restored" / "portal.sqlite3"

    written = sqlite_portal.manage("backup", "--target", str(backups))
    done = sqlite_portal.manage("restore", "latest", "--target", str(backups), "--database-url", f"sqlite:///{restored}", "--yes")

    assert "written and verified" in written.stdout and "restored and verified" in done.stdout
    source = database.table_sums(DatabaseConfig(vendor="sqlite", name=str(sqlite_portal.database)))
    assert database.table_sums(DatabaseConfig(vendor="sqlite", name=str(restored))) == source
    assert source["jobs_job"].rows > 5 and source["jobs_jobevent"].rows > source["jobs_job"].rows
    (name,) = [p.name for p in backups.iterdir()]
    assert sorted(p.name for p in (backups / name).iterdir()) == ["database.sqlite3.gz", "manifest.json"]


def test_restore_refuses_the_portal_s_own_database_and_says_why(sqlite_portal: SqlitePortal, tmp_path: Path) -> None:
    sqlite_portal.manage("backup", "--target", str(tmp_path))

    refused = sqlite_portal.manage("restore", "latest", "--target", str(tmp_path), "--yes", check=False)

    assert refused.returncode == 1
    assert f"SQLite file {sqlite_portal.database} is not empty" in refused.stderr


def test_a_dry_run_backup_writes_nothing(sqlite_portal: SqlitePortal, tmp_path: Path) -> None:
    said = sqlite_portal.manage("backup", "--target", str(tmp_path / "b"), "--dry-run", "--keep", "3")

    assert f"would back up SQLite file {sqlite_portal.database}" in said.stdout and not (tmp_path / "b").exists()
