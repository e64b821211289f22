"""Dumping, restoring and checksumming the portal's database, on PostgreSQL and SQLite.

Consistency: on PostgreSQL one REPEATABLE READ transaction exports its snapshot; pg_dump reads
that snapshot (`--snapshot`) while the table checksums are computed inside the same transaction,
so the manifest describes exactly the rows in the dump even while the portal keeps writing. On
SQLite the online backup API copies the database into a temporary file, and the checksums are
computed on that copy.

Table checksum: the row count and the sum, as an exact integer, of the first 64 bits of each
row's md5 (interpreted as a signed number). A sum is independent of row order, needs no sort
(one sequential scan: about a second per million jobs on PostgreSQL) and, unlike XOR, does not
cancel duplicate rows. It detects lost, extra or altered rows; it is not a defence against
someone forging rows on purpose (the artefacts' sha256 is what detects tampering).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from portal.env import parse_database_url

POSTGRES = "postgresql"
SQLITE = "sqlite"
CHECKSUM_METHODS = {
    POSTGRES: "count + sum of signed first 64 bits of md5(row::text), session in UTC/ISO; v1",
    SQLITE: "count + sum of signed first 64 bits of md5(repr(row tuple)); v1",
}
# Session settings that decide how PostgreSQL prints a row as text; fixed so that the source
# and the restored database print identical rows whatever their server defaults are.
PG_TEXT_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "bytea_output": "hex",
    "extra_float_digits": "1",
}
PG_TABLE_SUM = "SELECT count(*), coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint::numeric), 0)::text FROM {} AS t"
SQLITE_FETCH = 10_000


class DatabaseError(Exception):
    """Dumping or restoring the database failed; the message names the tool or table involved."""


class NotEmptyError(DatabaseError):
    """The database a backup was to be restored into already holds tables."""


@dataclass(frozen=True)
class TableSum:
    """How many rows a table holds and the order-independent checksum of their content."""

    rows: int
    checksum: str


@dataclass(frozen=True)
class DatabaseConfig:
    """Where a database is: the vendor and, for PostgreSQL, libpq connection parameters."""

    vendor: str
    name: str
    user: str = ""
    password: str = field(default="", repr=False)
    host: str = ""
    port: str = ""
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_django(cls, settings_dict: dict[str, Any]) -> DatabaseConfig:
        engine = str(settings_dict["ENGINE"])
        vendor = POSTGRES if engine.endswith("postgresql") else SQLITE if engine.endswith("sqlite3") else engine
        # Only the libpq parameters among OPTIONS (sslmode, ...); `pool` is Django's own.
        options = tuple((k, str(v)) for k, v in (settings_dict.get("OPTIONS") or {}).items() if isinstance(v, str))
        return cls(
            vendor=vendor,
            name=str(settings_dict["NAME"]),
            user=str(settings_dict.get("USER") or ""),
            password=str(settings_dict.get("PASSWORD") or ""),
            host=str(settings_dict.get("HOST") or ""),
            port=str(settings_dict.get("PORT") or ""),
            options=options if vendor == POSTGRES else (),
        )

    @classmethod
    def from_url(cls, url: str, base_dir: Path) -> DatabaseConfig:
        return cls.from_django(parse_database_url(url, base_dir).as_django())

    def describe(self) -> str:
        if self.vendor == SQLITE:
            return f"SQLite file {self.name}"
        return f"PostgreSQL database {self.name!r} on {self.host or 'the local socket'}{':' + self.port if self.port else ''}"

    def conninfo(self) -> str:
        """libpq parameters without the password, which travels in PGPASSWORD (never on a command line)."""
        params = {"dbname": self.name, "user": self.user, "host": self.host, "port": self.port, **dict(self.options)}
        return make_conninfo(**{k: v for k, v in params.items() if v})

    def pg_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.conninfo(), password=self.password or None, **kwargs)


# --- which tables ------------------------------------------------------------------------------


def postgres_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Ordinary and partitioned tables of the schema the portal uses (the first on search_path)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema() ORDER BY c.relname"
    ).fetchall()
    return [row[0] for row in rows]


def sqlite_tables(conn: sqlite3.Connection) -> list[str]:
    """User tables; sqlite_* bookkeeping (autoincrement counters, statistics) is copied with the file but not summed."""
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
    )
    return [row[0] for row in rows]


# --- checksums ---------------------------------------------------------------------------------


def _signed64(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "big", signed=True)


def postgres_sums(conn: psycopg.Connection[Any], tables: Iterable[str]) -> dict[str, TableSum]:
    """Checksums of `tables` in the connection's current transaction (call inside one)."""
    for name, value in PG_TEXT_SETTINGS.items():
        conn.execute("SELECT set_config(%s, %s, true)", (name, value))
    sums = {}
    for table in tables:
        row = conn.execute(sql.SQL(PG_TABLE_SUM).format(sql.Identifier(table))).fetchone()
        assert row is not None
        sums[table] = TableSum(rows=int(row[0]), checksum=str(row[1]))
    return sums


def sqlite_sums(conn: sqlite3.Connection, tables: Iterable[str]) -> dict[str, TableSum]:
    """Checksums streamed through Python, SQLITE_FETCH rows at a time."""
    sums = {}
    for table in tables:
        count, total = 0, 0
        cursor = conn.execute(f'SELECT * FROM "{table.replace(chr(34), chr(34) * 2)}"')
        while batch := cursor.fetchmany(SQLITE_FETCH):
            count += len(batch)
            total += sum(_signed64(hashlib.md5(repr(row).encode(), usedforsecurity=False).digest()) for row in batch)
        sums[table] = TableSum(rows=count, checksum=str(total))
    return sums


def table_sums(db: DatabaseConfig) -> dict[str, TableSum]:
    """Every table's checksum in a database at rest (used to verify a restore)."""
    if db.vendor == POSTGRES:
        with db.connect() as pg, pg.transaction():
            return postgres_sums(pg, postgres_tables(pg))
    with _sqlite(Path(db.name)) as lite:
        return sqlite_sums(lite, sqlite_tables(lite))


@contextmanager
def _sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        yield conn
    finally:
        conn.close()


# --- dump --------------------------------------------------------------------------------------


def dump(db: DatabaseConfig, dest: Path) -> tuple[dict[str, TableSum], str]:
    """Write a consistent compressed dump to `dest`; returns the tables' checksums and the server version."""
    if db.vendor == POSTGRES:
        return _dump_postgres(db, dest)
    if db.vendor == SQLITE:
        return _dump_sqlite(db, dest), sqlite3.sqlite_version
    raise DatabaseError(f"backups support PostgreSQL and SQLite, not {db.vendor}")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise DatabaseError(f"{name} is not on PATH; install the PostgreSQL client tools (postgresql-client) matching the server")
    return path


def _dump_postgres(db: DatabaseConfig, dest: Path) -> tuple[dict[str, TableSum], str]:
    command = [_tool("pg_dump"), "--format=custom", "--compress=6", "--no-password", f"--file={dest}"]
    with db.connect() as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            snapshot = str(conn.execute("SELECT pg_export_snapshot()").fetchone()[0])  # type: ignore[index]
            version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
            # The exporting transaction must stay open until pg_dump has imported the snapshot:
            # the checksums run in it meanwhile, and it ends only after pg_dump has exited.
            proc = subprocess.Popen(
                [*command, f"--snapshot={snapshot}", f"--dbname={db.conninfo()}"],
                env=db.pg_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                sums = postgres_sums(conn, postgres_tables(conn))
            finally:
                _, stderr = proc.communicate()
    if proc.returncode != 0:
        raise DatabaseError(
            f"pg_dump of {db.describe()} failed (exit {proc.returncode}): {stderr.decode(errors='replace').strip()}"
        )
    return sums, version


def _dump_sqlite(db: DatabaseConfig, dest: Path) -> dict[str, TableSum]:
    source = Path(db.name)
    if not source.is_file():
        raise DatabaseError(f"the SQLite database {source} does not exist")
    copy = dest.with_name(dest.name + ".copy")
    try:
        with _sqlite(source) as live, _sqlite(copy) as snapshot:
            live.backup(snapshot)  # the online backup API: a consistent copy while the portal writes
            sums = sqlite_sums(snapshot, sqlite_tables(snapshot))
        with copy.open("rb") as raw, gzip.open(dest, "wb", compresslevel=6) as packed:
            shutil.copyfileobj(raw, packed, 1 << 20)
    finally:
        copy.unlink(missing_ok=True)
    return sums


# --- restore -----------------------------------------------------------------------------------


def ensure_empty(db: DatabaseConfig) -> None:
    """Refuse, naming some of them, a database that already has tables."""
    if db.vendor == POSTGRES:
        try:
            with db.connect() as conn:
                tables = postgres_tables(conn)
        except psycopg.OperationalError as exc:
            raise DatabaseError(f"cannot connect to {db.describe()} (create it first: createdb {db.name}): {exc}") from exc
    else:
        path = Path(db.name)
        if not path.exists():
            return
        with _sqlite(path) as conn:
            tables = sqlite_tables(conn)
    if tables:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise NotEmptyError(
            f"{db.describe()} is not empty ({len(tables)} tables: {shown}); "
            "a backup is restored only into an empty database: create a new one, or drop this one first"
        )


def restore(db: DatabaseConfig, dump_file: Path, *, jobs: int = 1) -> None:
    """Load a dump made by `dump` into the empty database `db`."""
    if db.vendor == POSTGRES:
        _restore_postgres(db, dump_file, jobs)
    elif db.vendor == SQLITE:
        _restore_sqlite(db, dump_file)
    else:
        raise DatabaseError(f"backups support PostgreSQL and SQLite, not {db.vendor}")


def _restore_postgres(db: DatabaseConfig, dump_file: Path, jobs: int) -> None:
    # One transaction by default, so a failure leaves the database empty, not half restored;
    # parallel jobs are faster on big databases but cannot share a transaction.
    mode = ["--single-transaction"] if jobs == 1 else [f"--jobs={jobs}"]
    command = [_tool("pg_restore"), "--no-owner", "--no-acl", "--exit-on-error", "--no-password", *mode]
    done = subprocess.run(
        [*command, f"--dbname={db.conninfo()}", str(dump_file)], env=db.pg_env(), capture_output=True, check=False
    )
    if done.returncode != 0:
        raise DatabaseError(
            f"pg_restore into {db.describe()} failed (exit {done.returncode}): {done.stderr.decode(errors='replace').strip()}"
        )
    with db.connect(autocommit=True) as conn:
        conn.execute("ANALYZE")  # planner statistics are not in a dump; without them the first queries plan badly


def _restore_sqlite(db: DatabaseConfig, dump_file: Path) -> None:
    target = Path(db.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".restoring")
    with gzip.open(dump_file, "rb") as packed, partial.open("wb") as raw:
        shutil.copyfileobj(packed, raw, 1 << 20)
        raw.flush()
        os.fsync(raw.fileno())
    for leftover in (target.with_name(target.name + "-wal"), target.with_name(target.name + "-shm")):
        leftover.unlink(missing_ok=True)  # belonged to the empty database being replaced
    partial.replace(target)
