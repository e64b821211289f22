"""Start the whole portal (web, worker, beat) as the run command does, on a scratch PostgreSQL database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunningPortal:
    url: str
    env: dict[str, str]
    log: Path

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120, check=True
        )
        return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _admin(sql: str) -> None:
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(sql)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the portal exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the portal did not become healthy in time")


@contextmanager
def running_portal(tmp: Path, redis_url: str, **extra_env: str) -> Iterator[RunningPortal]:
    name = f"gridportal_e2e_{os.getpid()}"
    _admin(f"DROP DATABASE IF EXISTS {name}")
    _admin(f"CREATE DATABASE {name}")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        "DJANGO_SETTINGS_MODULE": "grid.settings",
        "DEBUG": "false",
        "SECRET_KEY": "e2e-secret",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{name}",
        "REDIS_URL": redis_url,
        "PORTAL_DATA_DIR": str(tmp),
        "SIM_FAILURE_RATE": "0",
        "GRID_CYCLE_S": "0.5",
        **extra_env,
    }
    log = tmp / "portal.log"
    portal = RunningPortal(f"http://127.0.0.1:{port}", env, log)
    process = None
    try:
        portal.manage("migrate", "--noinput")
        portal.manage("collectstatic", "--noinput")
        portal.manage("seed_demo", "--jobs", "0")
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "manage.py", "runportal", "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            _wait_healthy(portal.url, process)
            yield portal
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
