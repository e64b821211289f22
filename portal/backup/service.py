"""Backing up, pruning and restoring: the steps the `backup` and `restore` commands and the nightly task share.

A backup is a folder `backup-<UTC time>/` on the target holding the database dump, the portal's
files (when there are any) and `manifest.json`. The manifest is written last, only after every
artefact has been read back from the target and matched its sha256; a folder without a manifest
is therefore incomplete (failed, or still being written) and is never counted, restored or pruned.
"""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.db import connections

from portal.backup import database
from portal.backup.database import DatabaseConfig, TableSum
from portal.backup.manifest import MANIFEST, Manifest, sha256_of
from portal.backup.targets import Target, TargetError, open_target

Say = Callable[[str], None]
PREFIX = "backup-"
DATABASE_ARTEFACTS = {database.POSTGRES: "database.dump", database.SQLITE: "database.sqlite3.gz"}
FILES_ARTEFACT = "files.tar.gz"


class BackupError(Exception):
    """A backup or restore cannot go on; the message says what is wrong and what to do."""


class VerificationError(BackupError):
    """What was read back, downloaded or restored differs from the manifest; `table` names the table when one differs."""

    def __init__(self, message: str, table: str | None = None) -> None:
        super().__init__(message)
        self.table = table


def _quiet(message: str) -> None:
    return None


# --- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupSettings:
    """The BACKUP_* settings, with their defaults when settings.py does not set them."""

    target: str
    keep: int
    s3_endpoint_url: str | None
    s3_region: str | None
    files_dir: Path


def backup_settings() -> BackupSettings:
    return BackupSettings(
        target=str(getattr(settings, "BACKUP_TARGET", "") or Path(settings.DATA_DIR) / "backups"),
        keep=int(getattr(settings, "BACKUP_KEEP", 7)),
        s3_endpoint_url=getattr(settings, "BACKUP_S3_ENDPOINT_URL", None) or None,
        s3_region=getattr(settings, "BACKUP_S3_REGION", None) or None,
        files_dir=Path(getattr(settings, "BACKUP_FILES_DIR", "") or Path(settings.DATA_DIR) / "files"),
    )


def target_for(location: str | None = None) -> Target:
    """The target named on the command line, else BACKUP_TARGET."""
    config = backup_settings()
    return open_target(location or config.target, endpoint_url=config.s3_endpoint_url, region=config.s3_region)


def default_database() -> DatabaseConfig:
    return DatabaseConfig.from_django(connections["default"].settings_dict)


# --- what is on a target -----------------------------------------------------------------------


def backup_name(now: datetime | None = None) -> str:
    return PREFIX + (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def inventory(target: Target) -> tuple[list[str], list[str]]:
    """(complete, incomplete) backup names on the target, oldest first."""
    groups = {name: files for name, files in target.groups().items() if name.startswith(PREFIX)}
    complete = sorted(name for name, files in groups.items() if MANIFEST in files)
    return complete, sorted(set(groups) - set(complete))


def resolve(target: Target, name: str) -> str:
    """`latest` or a backup's name -> the name of a complete backup on the target."""
    complete, incomplete = inventory(target)
    if name == "latest":
        if not complete:
            raise BackupError(f"no complete backup in {target.location}")
        return complete[-1]
    if name in incomplete:
        raise BackupError(f"{name} in {target.location} is incomplete (no {MANIFEST}): it failed or is still being written")
    if name not in complete:
        raise BackupError(f"no backup {name!r} in {target.location} (complete ones: {', '.join(complete[-5:]) or 'none'})")
    return name


def read_manifest(target: Target, name: str, work: Path) -> Manifest:
    local = work / MANIFEST
    target.get(f"{name}/{MANIFEST}", local)
    return Manifest.from_json(local.read_bytes(), f"{target.location}/{name}")


# --- backup ------------------------------------------------------------------------------------


@dataclass
class PruneResult:
    """What pruning kept, deleted and left alone."""

    kept: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)


@dataclass
class BackupResult:
    """A backup written and verified, and what pruning did afterwards."""

    name: str
    location: str
    manifest: Manifest
    pruned: PruneResult


def create_backup(
    target: Target,
    *,
    keep: int,
    db: DatabaseConfig | None = None,
    files_dir: Path | None = None,
    now: datetime | None = None,
    say: Say = _quiet,
) -> BackupResult:
    """Dump, upload, read back and check, write the manifest, then prune to the newest `keep`."""
    if keep < 1:
        raise BackupError(f"keep={keep}: at least the backup just written is kept, so keep must be 1 or more")
    db = db or default_database()
    name = backup_name(now)
    if target.keys(f"{name}/"):
        raise BackupError(f"{target.location}/{name} already exists; is another backup running?")
    with tempfile.TemporaryDirectory(prefix="portal-backup-") as folder:
        work = Path(folder)
        manifest = _make_artefacts(db, files_dir or backup_settings().files_dir, work, name, say)
        _store(target, name, manifest, work, say)
    say(f"backup {name} complete in {target.location}")
    return BackupResult(name, target.location, manifest, prune(target, keep, protect=name, say=say))


def _make_artefacts(db: DatabaseConfig, files_dir: Path, work: Path, name: str, say: Say) -> Manifest:
    started = time.perf_counter()
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    say(f"dumping {db.describe()} ...")
    dump_name = DATABASE_ARTEFACTS.get(db.vendor, "database")
    sums, version = database.dump(db, work / dump_name)
    _check_model_tables(sums)
    manifest = Manifest(
        name=name,
        created_at=created_at,
        portal_version=portal_version(),
        database={
            "vendor": db.vendor,
            "name": Path(db.name).name if db.vendor == database.SQLITE else db.name,
            "server_version": version,
        },
        checksum_method=database.CHECKSUM_METHODS[db.vendor],
        tables=sums,
        artefacts={dump_name: sha256_of(work / dump_name)},
    )
    manifest.timings_s["dump"] = round(time.perf_counter() - started, 2)
    packed = _pack_files(files_dir, work / FILES_ARTEFACT)
    if packed is not None:
        manifest.files = packed
        manifest.artefacts[FILES_ARTEFACT] = sha256_of(work / FILES_ARTEFACT)
    rows = sum(s.rows for s in sums.values())
    say(
        f"  {len(sums)} tables, {rows:,} rows, dump {manifest.artefacts[dump_name].bytes:,} bytes in {manifest.timings_s['dump']}s"
    )
    return manifest


def model_tables() -> set[str]:
    """The tables Django's models (and their many-to-many links) live in."""
    models = apps.get_models(include_auto_created=True)
    return {m._meta.db_table for m in models if m._meta.managed and not m._meta.proxy and not m._meta.swapped}


def _check_model_tables(sums: dict[str, TableSum]) -> None:
    missing = sorted(model_tables() - set(sums))
    if missing:
        raise BackupError(f"the database lacks the tables {', '.join(missing)}; run `manage.py migrate` before backing it up")


def portal_version() -> str:
    """The git commit the portal runs from (with -dirty for local changes), or PORTAL_VERSION, or 'unknown'."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is not None and done.returncode == 0 and done.stdout.strip():
        return done.stdout.strip()
    return str(getattr(settings, "PORTAL_VERSION", "") or "unknown")


def _pack_files(files_dir: Path, dest: Path) -> dict[str, int] | None:
    """Tar the portal's own files (uploads and the like kept under DATA_DIR/files), if there are any."""
    if not files_dir.is_dir():
        return None
    files = [p for p in files_dir.rglob("*") if p.is_file()]
    if not files:
        return None
    with tarfile.open(dest, "w:gz") as tar:
        for path in sorted(files):
            tar.add(path, arcname=path.relative_to(files_dir).as_posix(), recursive=False)
    return {"count": len(files), "bytes": sum(p.stat().st_size for p in files)}


def _store(target: Target, name: str, manifest: Manifest, work: Path, say: Say) -> None:
    """Upload the artefacts, read each back and compare, then the manifest last; on failure remove this run's upload."""
    started = time.perf_counter()
    try:
        for artefact in manifest.artefacts:
            target.put(f"{name}/{artefact}", work / artefact)
        _check_stored(target, name, manifest, work / "read-back")
        manifest.timings_s["store_and_verify"] = round(time.perf_counter() - started, 2)
        (work / MANIFEST).write_bytes(manifest.to_json())
        target.put(f"{name}/{MANIFEST}", work / MANIFEST)
        target.get(f"{name}/{MANIFEST}", work / "manifest.read-back")
        if (work / "manifest.read-back").read_bytes() != manifest.to_json():
            raise VerificationError(f"{name}/{MANIFEST} read back from {target.location} differs from what was written")
    except (TargetError, VerificationError):
        say(f"removing the incomplete backup {name} from {target.location}")
        target.delete(target.keys(f"{name}/"))
        raise
    say(f"  stored and read back in {manifest.timings_s['store_and_verify']}s")


def _check_stored(target: Target, name: str, manifest: Manifest, folder: Path) -> dict[str, Path]:
    """Download every artefact into `folder` and compare its sha256 and size with the manifest."""
    folder.mkdir(exist_ok=True)
    local = {}
    for artefact, expected in manifest.artefacts.items():
        local[artefact] = folder / artefact
        target.get(f"{name}/{artefact}", local[artefact])
        found = sha256_of(local[artefact])
        if found != expected:
            raise VerificationError(
                f"{target.location}/{name}/{artefact} is damaged: sha256 {found.sha256[:16]}…, {found.bytes:,} bytes; "
                f"the manifest says {expected.sha256[:16]}…, {expected.bytes:,} bytes"
            )
    return local


# --- pruning -----------------------------------------------------------------------------------


def prune(target: Target, keep: int, *, protect: str | None = None, dry_run: bool = False, say: Say = _quiet) -> PruneResult:
    """Delete complete backups beyond the newest `keep`; never `protect`, never an incomplete one."""
    complete, incomplete = inventory(target)
    kept = complete[-keep:] if keep > 0 else []
    if protect in complete and protect not in kept:
        kept.append(protect)
    result = PruneResult(kept=kept, deleted=[n for n in complete if n not in kept], incomplete=incomplete)
    for name in result.deleted:
        say(f"{'would prune' if dry_run else 'pruning'} {name}")
        if not dry_run:
            keys = target.keys(f"{name}/")
            # The manifest goes first: a deletion cut short leaves an incomplete backup, never a complete-looking broken one.
            target.delete([f"{name}/{MANIFEST}"])
            target.delete([k for k in keys if k != f"{name}/{MANIFEST}"])
    for name in incomplete:
        say(f"left alone: {name} has no {MANIFEST} (failed or still being written); remove it by hand once no backup is running")
    return result


# --- restore -----------------------------------------------------------------------------------


@dataclass
class RestoreResult:
    """A backup restored (or, on a dry run, checked) and how long each step took."""

    name: str
    tables: int
    rows: int
    restored: bool
    timings_s: dict[str, float] = field(default_factory=dict)


def restore_backup(
    target: Target,
    name: str,
    db: DatabaseConfig,
    *,
    files_dir: Path | None = None,
    dry_run: bool = False,
    jobs: int = 1,
    say: Say = _quiet,
) -> RestoreResult:
    """Check the backup's artefacts, load it into the empty `db`, and compare every table with the manifest."""
    files_dir = files_dir or backup_settings().files_dir
    with tempfile.TemporaryDirectory(prefix="portal-restore-") as folder:
        work = Path(folder)
        manifest = read_manifest(target, name, work)
        _check_destination(manifest, db, files_dir)
        started = time.perf_counter()
        local = _check_stored(target, name, manifest, work / "artefacts")
        result = RestoreResult(name, len(manifest.tables), sum(s.rows for s in manifest.tables.values()), restored=False)
        result.timings_s["fetch_and_check"] = round(time.perf_counter() - started, 2)
        say(f"{name}: {len(local)} artefacts match their sha256 ({result.timings_s['fetch_and_check']}s)")
        if dry_run:
            return result
        _load(manifest, db, files_dir, local, jobs, result, say)
    started = time.perf_counter()
    compare_tables(manifest.tables, database.table_sums(db))
    result.timings_s["verify"] = round(time.perf_counter() - started, 2)
    say(f"verified: {result.tables} tables, {result.rows:,} rows equal the manifest ({result.timings_s['verify']}s)")
    return result


def _check_destination(manifest: Manifest, db: DatabaseConfig, files_dir: Path) -> None:
    vendor = manifest.database.get("vendor")
    if vendor != db.vendor:
        raise BackupError(f"{manifest.name} is a {vendor} backup; it cannot be restored into {db.describe()}")
    database.ensure_empty(db)
    if FILES_ARTEFACT in manifest.artefacts and files_dir.is_dir() and any(files_dir.iterdir()):
        raise BackupError(f"{files_dir} is not empty; the backup's files are restored only into an empty folder")


def _load(
    manifest: Manifest, db: DatabaseConfig, files_dir: Path, local: dict[str, Path], jobs: int, result: RestoreResult, say: Say
) -> None:
    started = time.perf_counter()
    say(f"restoring into {db.describe()} ...")
    database.restore(db, local[DATABASE_ARTEFACTS[db.vendor]], jobs=jobs)
    if FILES_ARTEFACT in local:
        files_dir.mkdir(parents=True, exist_ok=True)
        with tarfile.open(local[FILES_ARTEFACT], "r:gz") as tar:
            tar.extractall(files_dir, filter="data")  # "data": no absolute paths, links out or devices
        say(f"  {manifest.files.get('count', 0)} files into {files_dir}")
    result.restored = True
    result.timings_s["restore"] = round(time.perf_counter() - started, 2)
    say(f"  restored in {result.timings_s['restore']}s")


def compare_tables(expected: dict[str, TableSum], actual: dict[str, TableSum]) -> None:
    """Raise VerificationError for the first table (alphabetically) that differs."""
    for table in sorted(set(expected) | set(actual)):
        want, got = expected.get(table), actual.get(table)
        if got is None:
            raise VerificationError(f"table {table} is in the backup but missing from the restored database", table)
        if want is None:
            raise VerificationError(f"table {table} is in the restored database but not in the backup's manifest", table)
        if want.rows != got.rows:
            raise VerificationError(f"table {table}: {want.rows:,} rows in the backup, {got.rows:,} after restoring", table)
        if want.checksum != got.checksum:
            raise VerificationError(f"table {table}: same {got.rows:,} rows, but their content differs from the backup", table)
