"""Start the whole portal (web, worker, beat) as the run command does, on a scratch PostgreSQL database."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.stack import QUICK_GRID, ROOT, free_port, portal_env, scratch_database, wait_healthy


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


@contextmanager
def running_portal(tmp: Path, redis_url: str, **extra_env: str) -> Iterator[RunningPortal]:
    """The portal on a scratch database with the demo logins only."""
    with _running(tmp, redis_url, ("--jobs", "0"), extra_env) as portal:
        yield portal


@contextmanager
def running_demo_portal(tmp: Path, redis_url: str, **extra_env: str) -> Iterator[RunningPortal]:
    """The portal seeded as a first start seeds it: jobs, history, invoices, a budget, a burst proposal."""
    with _running(tmp, redis_url, (), extra_env) as portal:
        yield portal


@contextmanager
def _running(tmp: Path, redis_url: str, seed_args: tuple[str, ...], extra_env: dict[str, str]) -> Iterator[RunningPortal]:
    with scratch_database(prefix="gridportal_e2e") as database_url:
        env = portal_env(database_url, redis_url, tmp, **{**QUICK_GRID, **extra_env})
        port = free_port()
        portal = RunningPortal(f"http://127.0.0.1:{port}", env, tmp / "portal.log")
        portal.manage("migrate", "--noinput")
        portal.manage("collectstatic", "--noinput")
        portal.manage("seed_demo", *seed_args)
        process = None
        try:
            with portal.log.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "manage.py", "runportal", "--port", str(port)],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
                wait_healthy(portal.url, process, 60, portal.log)
                yield portal
        finally:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
