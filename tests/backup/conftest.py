"""Backup fixtures: seeded data, scratch PostgreSQL databases, a seeded SQLite portal, a local S3 server."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from django.conf import settings
from django.db import connection

from billing import services as billing_services
from billing.services import budgets
from cluster.simulator.backend import SimulatorBackend
from jobs import services as job_services
from jobs.models import Job
from portal.backup import DatabaseConfig
from portal.models import ApiToken, User
from tests.stack import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
ON_POSTGRES = str(settings.DATABASES["default"]["ENGINE"]).endswith("postgresql")
needs_postgres = [
    pytest.mark.postgres,
    pytest.mark.skipif(not ON_POSTGRES, reason="the test database is not PostgreSQL"),
    pytest.mark.django_db(transaction=True),  # committed rows: pg_dump reads them from another session
]


def on_postgres(test: Callable[..., Any]) -> Callable[..., Any]:
    """Mark one test as needing PostgreSQL (for modules where only some tests do)."""
    for mark in needs_postgres:
        test = mark(test)
    return test


@pytest.fixture
def seeded(
    grid: SimulatorBackend, alice: User, bob: User, carol: User, olivia: User, submit: Callable[..., Job]
) -> dict[str, Any]:
    """Teams, users, quotas, jobs with their events (admitted, running, cancelled), tokens, rate cards, a budget."""
    jobs = [submit(alice, name=f"train-{i}") for i in range(4)] + [submit(bob, gpu_model="h100", gpus_per_node=2)]
    job_services.run_admission_cycle()
    job_services.sync_jobs(grid)
    job_services.cancel(alice, Job.objects.get(pk=jobs[0].pk), "not needed")
    ApiToken.issue(carol, "ci")
    billing_services.add_rate_card(
        gpu_model="a100", pool_kind="onprem", per_gpu_hour=Decimal("2.00"), valid_from=date(2024, 1, 1)
    )
    budgets.set_budget(alice.teams.get().pk, Decimal("1000"), [(Decimal("80"), "notify")])
    return {"jobs": jobs}


def _admin_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/postgres"


@pytest.fixture
def fresh_database() -> Iterator[DatabaseConfig]:
    """An empty PostgreSQL database on the test server, dropped afterwards."""
    name = f"restore_test_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(_admin_url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    source = DatabaseConfig.from_django(connection.settings_dict)
    try:
        yield DatabaseConfig(
            vendor=source.vendor, name=name, user=source.user, password=source.password, host=source.host, port=source.port
        )
    finally:
        with psycopg.connect(_admin_url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- a portal on SQLite, driven through manage.py in child processes -----------------------------


@dataclass(frozen=True)
class SqlitePortal:
    """A portal whose DATA_DIR and SQLite database live in a temporary folder."""

    data_dir: Path

    @property
    def database(self) -> Path:
        return self.data_dir / "portal.sqlite3"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "REDIS_URL"))}
        env.update(
            DJANGO_SETTINGS_MODULE="grid.settings",
            SECRET_KEY="backup-tests",
            DATABASE_URL=f"sqlite:///{self.database}",
            PORTAL_DATA_DIR=str(self.data_dir),
            CELERY_TASK_ALWAYS_EAGER="true",
            SIM_FAILURE_RATE="0",
            LOG_LEVEL="WARNING",
            **extra,
        )
        return env

    def manage(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.env(**env),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done


@pytest.fixture(scope="session")
def seeded_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite portal with the demo data (teams, users, quotas, jobs and events), made once."""
    portal = SqlitePortal(tmp_path_factory.mktemp("sqlite-template"))
    portal.manage("migrate", "--verbosity=0")
    portal.manage("seed_demo")
    return portal.database


@pytest.fixture
def sqlite_portal(tmp_path: Path, seeded_sqlite_template: Path) -> SqlitePortal:
    portal = SqlitePortal(tmp_path / "portal")
    portal.data_dir.mkdir()
    shutil.copyfile(seeded_sqlite_template, portal.database)
    return portal


# --- a local S3-compatible server ----------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on a loopback port, for as long as the session needs it."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("w")
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _wait_for(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"moto_server did not answer on {url} within 30 s")


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket; credentials come from the environment as in production."""
    import boto3

    monkeypatch.setenv("BACKUP_S3_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("BACKUP_S3_SECRET_ACCESS_KEY", "testing")
    bucket = f"backups-{secrets.token_hex(4)}"
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    client.create_bucket(Bucket=bucket)
    return bucket
