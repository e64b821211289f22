"""The portal as separate processes (web, worker, beat) on a scratch database, and services of its own to break.

Drills restart one piece at a time, so each process is started here rather than through
`runportal`. `OwnRedis` and `OwnPostgres` are private instances on their own ports (never the
shared ones on 6379/5432, which other test runs use); everything stops and is removed on exit,
also when a drill fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
SHARED_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port(preferred: int | None = None) -> int:
    """`preferred` when nothing listens there, else any free loopback port."""
    candidates = [preferred] if preferred else []
    for port in [*candidates, 0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port or 0))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port")


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            result = check()
            if result:
                return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# --- services of the drill's own --------------------------------------------------------------


class OwnRedis:
    """A throwaway redis-server (no persistence) the drill may stop and start at will."""

    def __init__(self, port: int = 6390) -> None:
        self.port = free_port(port)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.ping, 15, f"redis on {self.port}", 0.1)

    def ping(self) -> bool:
        import redis

        return bool(redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def __enter__(self) -> OwnRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class OwnPostgres:
    """A throwaway PostgreSQL 15 cluster (trust auth, loopback only) in a temporary directory."""

    def __init__(self, port: int = 5439) -> None:
        self.port = free_port(port)
        self.folder = Path(tempfile.mkdtemp(prefix="portal-drill-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"

    def _as_postgres(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if os.geteuid() == 0:  # the server refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)

    def create(self) -> None:
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", *args)

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode)

    def url(self, name: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> OwnPostgres:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def scratch_database(admin_url: str = SHARED_ADMIN_URL, prefix: str = "gridportal_drill") -> Iterator[str]:
    """An empty database on the server of `admin_url`; yields its URL, drops it (forcing sessions out) at the end."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgres://") + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the portal --------------------------------------------------------------------------------


@dataclass
class Stack:
    """The portal's processes on one database and one Redis; each can be stopped, killed and started alone."""

    env: dict[str, str]
    logs: Path
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def command(self, name: str) -> list[str]:
        python = sys.executable
        return {
            "web": [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "grid.asgi:application"],
            "worker": [python, "-m", "celery", "-A", "portal", "worker", "--loglevel=WARNING", "--concurrency=2"],
            "beat": [
                python, "-m", "celery", "-A", "portal", "beat", "--loglevel=WARNING",
                f"--schedule={self.logs / 'celerybeat-schedule'}",
            ],
        }[name]  # fmt: skip

    def manage(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def start(self, name: str) -> None:
        out = (self.logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            self.command(name), cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)  # the whole group: a prefork worker's children go too
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def health(self) -> tuple[int, dict[str, Any]]:
        """Status and body of /healthz; (0, {}) when nothing answers."""
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError:
            return 0, {}

    def wait_healthy(self, timeout: float = 60) -> None:
        wait_for(lambda: self.health()[0] == 200, timeout, f"/healthz 200 on {self.url} (logs in {self.logs})")

    def credentials(self, usernames: list[str]) -> dict[str, dict[str, str]]:
        """An API token and a signed-in session cookie for each user."""
        code = (
            "import json\n"
            "from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY\n"
            "from django.contrib.sessions.backends.db import SessionStore\n"
            "from portal.models import ApiToken, User\n"
            "out = {}\n"
            f"for name in {usernames!r}:\n"
            "    user = User.objects.get(username=name)\n"
            "    _, key = ApiToken.issue(user, 'drill')\n"
            "    s = SessionStore()\n"
            "    s[SESSION_KEY] = str(user.pk)\n"
            "    s[BACKEND_SESSION_KEY] = 'django.contrib.auth.backends.ModelBackend'\n"
            "    s[HASH_SESSION_KEY] = user.get_session_auth_hash()\n"
            "    s.create()\n"
            "    out[name] = {'token': key, 'session': s.session_key}\n"
            "print(json.dumps(out))\n"
        )
        return dict(json.loads(self.manage("shell", "-c", code).strip().splitlines()[-1]))

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in sorted(self.logs.glob("*.log")))


# A grid that never fails jobs by chance and runs its cycle twice a second: tests see outcomes fast.
QUICK_GRID = {"SIM_FAILURE_RATE": "0", "GRID_CYCLE_S": "0.5"}


def portal_env(database_url: str, redis_url: str | None, data_dir: Path, **extra: str) -> dict[str, str]:
    """The production settings (`grid.settings`, DEBUG off) on the given database and Redis (None: no Redis)."""
    keep = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "CELERY_TASK_ALWAYS_EAGER", "REDIS_URL")}
    env = {
        **keep,
        "DJANGO_SETTINGS_MODULE": "grid.settings",
        "DEBUG": "false",
        "SECRET_KEY": "test-" + secrets.token_hex(16),
        "DATABASE_URL": database_url,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "PORTAL_DATA_DIR": str(data_dir),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    """Wait for /healthz to answer 200; fail at once, with the log's tail, if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the portal exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url + "/healthz", timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{url}/healthz did not answer 200 in {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


@contextlib.contextmanager
def portal_stack(
    database_url: str, redis_url: str, data_dir: Path, *, parts: tuple[str, ...] = ("web", "worker", "beat"), **extra: str
) -> Iterator[Stack]:
    """Migrate and seed the database (demo teams and users, no jobs), start the parts, wait for /healthz."""
    data_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(portal_env(database_url, redis_url, data_dir, **{**QUICK_GRID, **extra}), data_dir)
    try:
        stack.manage("migrate", "--noinput")
        stack.manage("seed_demo", "--jobs", "0")
        for name in parts:
            stack.start(name)
        stack.wait_healthy(90)
        yield stack
    finally:
        for name in list(stack.processes):
            stack.stop(name)


# --- reading the outcome ---------------------------------------------------------------------


def query(database_url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url.replace("postgres://", "postgresql://"), connect_timeout=5) as conn:
        return list(conn.execute(sql, args).fetchall())


def job_states(database_url: str) -> dict[int, str]:
    return dict(query(database_url, "SELECT id, state FROM jobs_job"))


def copies_on_grid(database_url: str) -> dict[int, int]:
    """How many simulated backend jobs each portal job has (nothing done twice: at most one)."""
    return dict(query(database_url, "SELECT portal_job_id, count(*) FROM cluster_simjob GROUP BY portal_job_id"))


def admissions(database_url: str) -> dict[int, int]:
    return dict(query(database_url, "SELECT job_id, count(*) FROM jobs_jobevent WHERE to_state = 'admitted' GROUP BY job_id"))


class Watcher:
    """A websocket client that reconnects with backoff, as portal.js does, and notes every message's time."""

    def __init__(self, stack: Stack, path: str, session: str) -> None:
        self.url, self.path, self.session = stack.ws_url, path, session
        self.origin = stack.url
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.connects: list[float] = []
        self.closes: list[float] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        from websockets.sync.client import connect

        delay = 0.5
        while not self.stopping.is_set():
            try:
                headers = {"Cookie": f"sessionid={self.session}", "Origin": self.origin}
                with connect(self.url + self.path, additional_headers=headers, open_timeout=5) as socket_:
                    self.connects.append(time.monotonic())
                    delay = 0.5
                    while not self.stopping.is_set():
                        with contextlib.suppress(TimeoutError):
                            self.messages.append((time.monotonic(), json.loads(socket_.recv(timeout=0.5))))
            except Exception:  # noqa: BLE001 - any failure is a disconnect; back off and reconnect
                self.closes.append(time.monotonic())
                self.stopping.wait(delay)
                delay = min(delay * 2, 4.0)

    def messages_since(self, moment: float) -> int:
        return sum(1 for at, _ in self.messages if at > moment)
