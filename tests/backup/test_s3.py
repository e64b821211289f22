"""The S3 target against a real S3-compatible server (moto's, on loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from portal import backup
from portal.backup import DatabaseConfig, database
from tests.backup.conftest import SqlitePortal


def s3(bucket: str, endpoint: str, prefix: str = "portal/nightly") -> backup.Target:
    return backup.open_target(f"s3://{bucket}/{prefix}", endpoint_url=endpoint, region="us-east-1")


def test_it_backs_up_to_a_bucket_and_restores_from_it(
    sqlite_portal: SqlitePortal, s3_bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    target = s3(s3_bucket, s3_endpoint)
    source = DatabaseConfig(vendor="sqlite", name=str(sqlite_portal.database))
    restored = DatabaseConfig(vendor="sqlite", name=str(tmp_path / "restored.sqlite3"))

    made = backup.create_backup(target, keep=2, db=source, files_dir=tmp_path / "no-files")
    result = backup.restore_backup(target, backup.resolve(target, "latest"), restored, files_dir=tmp_path / "no-files")

    assert target.keys() == [f"{made.name}/database.sqlite3.gz", f"{made.name}/manifest.json"]
    assert result.restored and database.table_sums(restored) == database.table_sums(source) == made.manifest.tables


def test_a_damaged_object_in_the_bucket_is_detected(
    sqlite_portal: SqlitePortal, s3_bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    target = s3(s3_bucket, s3_endpoint)
    made = backup.create_backup(target, keep=1, db=DatabaseConfig(vendor="sqlite", name=str(sqlite_portal.database)))
    damaged = tmp_path / "damaged"
    target.get(f"{made.name}/database.sqlite3.gz", damaged)
    data = bytearray(damaged.read_bytes())
    data[100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    target.put(f"{made.name}/database.sqlite3.gz", damaged)

    with pytest.raises(backup.VerificationError, match=r"database\.sqlite3\.gz is damaged"):
        backup.restore_backup(target, made.name, DatabaseConfig(vendor="sqlite", name=str(tmp_path / "r.sqlite3")), dry_run=True)


def test_pruning_in_a_bucket_removes_whole_backups(s3_bucket: str, s3_endpoint: str, tmp_path: Path) -> None:
    target = s3(s3_bucket, s3_endpoint, prefix="")
    (tmp_path / "f").write_bytes(b"x")
    for name in ("backup-20260101T000000Z", "backup-20260102T000000Z", "backup-20260103T000000Z"):
        target.put(f"{name}/database.dump", tmp_path / "f")
        target.put(f"{name}/manifest.json", tmp_path / "f")
    target.put("backup-20260104T000000Z/database.dump", tmp_path / "f")  # incomplete

    backup.prune(target, 1)

    assert target.keys() == [
        "backup-20260103T000000Z/database.dump", "backup-20260103T000000Z/manifest.json", "backup-20260104T000000Z/database.dump",
    ]  # fmt: skip


def test_missing_credentials_are_named(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_S3_ACCESS_KEY_ID", "only-the-id")
    monkeypatch.delenv("BACKUP_S3_SECRET_ACCESS_KEY", raising=False)

    with pytest.raises(backup.TargetError, match="set both BACKUP_S3_ACCESS_KEY_ID and BACKUP_S3_SECRET_ACCESS_KEY"):
        s3("bucket", s3_endpoint)


def test_a_secret_can_come_from_a_file(s3_bucket: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("testing\n")
    monkeypatch.delenv("BACKUP_S3_SECRET_ACCESS_KEY")
    monkeypatch.setenv("BACKUP_S3_SECRET_ACCESS_KEY_FILE", str(tmp_path / "secret"))

    assert s3(s3_bucket, s3_endpoint).keys() == []
