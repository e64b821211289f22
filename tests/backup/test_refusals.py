"""Restores refuse what would lose or mix data: a non-empty database, a damaged artefact, another vendor's backup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from portal import backup
from portal.backup import DatabaseConfig
from tests.backup.conftest import needs_postgres

pytestmark = needs_postgres


def test_it_refuses_a_database_that_has_tables(seeded: dict[str, Any], tmp_path: Path) -> None:
    target = backup.LocalDirectory(tmp_path)
    made = backup.create_backup(target, keep=1)

    with pytest.raises(
        CommandError, match=r"is not empty \(\d+ tables: account_emailaddress, .*restored only into an empty database"
    ):
        call_command("restore", f"{tmp_path}/{made.name}", "--yes")


def test_a_flipped_byte_fails_verification_naming_the_artefact(
    seeded: dict[str, Any], fresh_database: DatabaseConfig, tmp_path: Path
) -> None:
    target = backup.LocalDirectory(tmp_path)
    made = backup.create_backup(target, keep=1)
    dump = tmp_path / made.name / "database.dump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))

    url = f"postgres://{fresh_database.user}@{fresh_database.host}:{fresh_database.port}/{fresh_database.name}"
    with pytest.raises(CommandError, match=rf"verification failed: .*{made.name}/database.dump is damaged: sha256"):
        call_command("restore", made.name, "--target", str(tmp_path), "--database-url", url, "--yes")
    assert backup.database.table_sums(fresh_database) == {}  # nothing was loaded


def test_a_postgresql_backup_is_not_restored_into_sqlite(seeded: dict[str, Any], tmp_path: Path) -> None:
    target = backup.LocalDirectory(tmp_path / "backups")
    backup.create_backup(target, keep=1)

    with pytest.raises(CommandError, match="is a postgresql backup; it cannot be restored into SQLite file"):
        call_command(
            "restore",
            "latest",
            "--target",
            str(tmp_path / "backups"),
            "--database-url",
            f"sqlite:///{tmp_path}/x.sqlite3",
            "--yes",
        )


def test_a_backup_without_its_manifest_is_incomplete_and_not_restored(seeded: dict[str, Any], tmp_path: Path) -> None:
    made = backup.create_backup(backup.LocalDirectory(tmp_path), keep=1)
    (tmp_path / made.name / backup.MANIFEST).unlink()

    with pytest.raises(CommandError, match=f"{made.name} in {tmp_path} is incomplete"):
        call_command("restore", made.name, "--target", str(tmp_path), "--yes")
