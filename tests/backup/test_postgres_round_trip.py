"""A PostgreSQL backup restored into a fresh database equals the source, table by table."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection

from portal import backup
from portal.backup import DatabaseConfig, database
from portal.backup.database import TableSum
from tests.backup.conftest import needs_postgres

pytestmark = needs_postgres


def source() -> backup.DatabaseConfig:
    return backup.DatabaseConfig.from_django(connection.settings_dict)


def test_it_restores_every_table_with_equal_counts_and_checksums(
    seeded: dict[str, Any], fresh_database: DatabaseConfig, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    (files / "reports").mkdir(parents=True)
    (files / "reports" / "2026-10.csv").write_text("team,gpu_hours\nvision,12.5\n")
    target = backup.LocalDirectory(tmp_path / "backups")

    made = backup.create_backup(target, keep=7, files_dir=files)
    restored = backup.restore_backup(target, made.name, fresh_database, files_dir=tmp_path / "restored-files")

    before, after = database.table_sums(source()), database.table_sums(fresh_database)
    assert after == before == made.manifest.tables
    assert before["jobs_job"].rows == 5 and before["jobs_jobevent"].rows > 5 and before["billing_budget"].rows == 1
    assert restored.restored and restored.rows == sum(s.rows for s in before.values())
    assert (tmp_path / "restored-files" / "reports" / "2026-10.csv").read_text() == "team,gpu_hours\nvision,12.5\n"


def test_the_manifest_lists_every_table_of_the_database_and_of_the_models(seeded: dict[str, Any], tmp_path: Path) -> None:
    made = backup.create_backup(backup.LocalDirectory(tmp_path), keep=1)

    with connection.cursor() as cursor:
        tables = {t.name for t in connection.introspection.get_table_list(cursor) if t.type == "t"}
    assert set(made.manifest.tables) == tables
    assert backup.model_tables() <= tables
    assert {"portal_team_members", "bursting_burstpolicy_allowed_teams", "django_session", "account_emailaddress"} & tables
    assert made.manifest.database["vendor"] == "postgresql" and made.manifest.portal_version
    stored = backup.Manifest.from_json((tmp_path / made.name / backup.MANIFEST).read_bytes(), "test")
    assert stored.tables == made.manifest.tables and set(stored.artefacts) == {"database.dump"}


def test_a_changed_row_is_named_by_its_table(seeded: dict[str, Any], fresh_database: DatabaseConfig, tmp_path: Path) -> None:
    target = backup.LocalDirectory(tmp_path)
    made = backup.create_backup(target, keep=1)
    manifest_file = tmp_path / made.name / backup.MANIFEST
    # The manifest describes a job table whose content differs from the dump, as if a row had changed.
    manifest_file.write_text(manifest_file.read_text().replace(made.manifest.tables["jobs_job"].checksum, "12345", 1))

    with pytest.raises(backup.VerificationError, match="table jobs_job: same 5 rows, but their content differs") as failure:
        backup.restore_backup(target, made.name, fresh_database)
    assert failure.value.table == "jobs_job"


def test_writes_during_the_backup_are_in_neither_the_dump_nor_the_manifest(
    seeded: dict[str, Any], fresh_database: DatabaseConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dump and the checksums read one snapshot: a team created mid-backup is in neither, and the restore verifies."""
    summed = database.postgres_sums

    def sums_after_a_concurrent_write(conn: psycopg.Connection[Any], tables: Iterable[str]) -> dict[str, TableSum]:
        with source().connect(autocommit=True) as other:
            other.execute("INSERT INTO portal_team (slug, name, created_at) VALUES ('late', 'Created during the backup', now())")
        return summed(conn, tables)

    monkeypatch.setattr(database, "postgres_sums", sums_after_a_concurrent_write)
    target = backup.LocalDirectory(tmp_path)
    made = backup.create_backup(target, keep=1)
    monkeypatch.setattr(database, "postgres_sums", summed)
    backup.restore_backup(target, made.name, fresh_database)

    assert made.manifest.tables["portal_team"].rows == 2
    assert database.table_sums(source())["portal_team"].rows == 3
    assert database.table_sums(fresh_database)["portal_team"].rows == 2
