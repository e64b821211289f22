"""Shared benchmark helpers: a scratch PostgreSQL database, portal servers, load generation, stats.

Everything here cleans up after itself: servers are stopped and the scratch database is dropped
when the `with` blocks exit, also on errors, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests import stack

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
# The PostgreSQL server the scratch database is created on (any existing database to connect to).
ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so every `finally` (servers, scratch database) still runs."""

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


# --- scratch database --------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """An empty database on ADMIN_URL's server (see tests.stack.scratch_database); this process's Django
    connections are closed before it is dropped."""
    with stack.scratch_database(ADMIN_URL, prefix=prefix) as url:
        log(f"created scratch database {url.rsplit('/', 1)[-1]}")
        try:
            yield url
        finally:
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
    log("dropped the scratch database")


# --- the portal's environment and Django in this process ---------------------------------------


def portal_env(database_url: str, data_dir: Path) -> dict[str, str]:
    """The environment the portal runs under in the benchmarks (production settings, no Redis, quiet logs)."""
    return stack.portal_env(database_url, None, data_dir, ALLOWED_HOSTS="127.0.0.1", LOG_LEVEL="WARNING", **UNCAPPED)


# Benchmarks measure throughput: the pending-job limits (a product safeguard) would turn a long run into 400s.
UNCAPPED = {"MAX_PENDING_JOBS_PER_TEAM": "10000000", "MAX_PENDING_JOBS_PER_USER": "10000000"}


def source_tree(folder: Path, working_tree: bool) -> tuple[Path, dict[str, Any]]:
    """The code to measure: a copy of the last commit (default), or the checkout as it is.

    The copy keeps a run consistent while the checkout is being edited: migrations, this
    process's models and every server started during the run come from the same commit.
    """
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    if working_tree:
        status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return REPO, {"source": "working tree", "commit": commit, "uncommitted_changes": len(status.stdout.splitlines())}
    dest = folder / "src"
    dest.mkdir()
    archive = subprocess.run([*git, "archive", "--format=tar", commit], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest, {"source": "snapshot of HEAD (git archive)", "commit": commit}


def setup_django(env: dict[str, str], source: Path = REPO) -> None:
    """Configure Django in this process with the code in `source` and the servers' settings, and migrate."""
    os.environ.pop("REDIS_URL", None)
    os.environ.update(env)
    sys.path.insert(0, str(source))
    # Celery's Django fix-up puts the current directory first on sys.path; make that `source`.
    os.chdir(source)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


@contextlib.contextmanager
def data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="portal-bench-") as folder:
        yield Path(folder)


# --- portal servers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


free_port = stack.free_port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)  # the server was started in its own session: pgid == pid
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def portal_servers(
    env: dict[str, str], count: int, logs: Path, source: Path = REPO, app: str = "grid.asgi:application"
) -> Iterator[list[Server]]:
    """Start `count` daphne processes (`app`, the portal by default) on free loopback ports; yield base URLs."""
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    urls: list[str] = []
    try:
        for i in range(count):
            port = free_port()
            logs.mkdir(parents=True, exist_ok=True)
            log_file = logs / f"daphne-{i}.log"
            with log_file.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app],
                    cwd=source,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            procs.append((proc, log_file))
            urls.append(f"http://127.0.0.1:{port}")
        for (proc, log_file), url in zip(procs, urls, strict=True):
            wait_healthy(url, proc, log_file)
        log(f"{count} daphne process(es) up: {', '.join(urls)}")
        yield [Server(url, proc.pid) for url, (proc, _) in zip(urls, procs, strict=True)]
    finally:
        for proc, _ in procs:
            _stop(proc)


def server_errors(logs: Path) -> dict[str, Any]:
    """Tracebacks in the servers' logs under `logs`: how many, and how often each final exception line."""
    exceptions: Counter[str] = Counter()
    example: list[str] = []
    for log_file in sorted(logs.glob("daphne-*.log")):
        lines = log_file.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if not line.startswith("Traceback (most recent call last)"):
                continue
            j = i + 1
            while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
                j += 1
            if j < len(lines):
                exceptions[lines[j][:300]] += 1
            if not example:
                example = lines[i : j + 1][-16:]
    if exceptions:
        log(f"server logs in {logs}: {sum(exceptions.values())} traceback(s)")
        for text, n in exceptions.most_common(5):
            log(f"  {n} x {text}")
    return {"tracebacks": sum(exceptions.values()), "exceptions": dict(exceptions.most_common(10)), "example": example}


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log_file: Path, timeout: float = 60.0) -> None:
    """Wait until /healthz answers with its database check passing.

    With no Celery worker running, the worker check (and so the overall status) reports 503;
    that is expected here, the benchmark only needs the web server and its database.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited with {proc.returncode}:\n{log_file.read_text()[-3000:]}")
        try:
            r = httpx.get(f"{url}/healthz", timeout=2)
            body = r.json()
            if body.get("checks", {}).get("database", {}).get("ok"):
                return
            last = f"{r.status_code} {r.text[:300]}"
        except (httpx.HTTPError, ValueError) as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{url}/healthz did not answer in {timeout:.0f}s ({last}):\n{log_file.read_text()[-3000:]}")


# --- load generation and statistics ------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Linear-interpolated percentile of `values` (p in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class LoadResult:
    clients: int
    elapsed_s: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    units: int = 0  # what a request produced (jobs created, rows listed), summed over successes
    acknowledged: int = 0  # units of every success, untimed warm-up requests included

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "clients": self.clients,
            "requests_ok": self.ok,
            "errors": dict(self.errors),
            "elapsed_s": round(self.elapsed_s, 3),
            "requests_per_s": round(self.ok / self.elapsed_s, 1) if self.elapsed_s else None,
            "units": self.units,
            "units_per_s": round(self.units / self.elapsed_s, 1) if self.elapsed_s else None,
            "latency_ms": {
                "p50": round(percentile(lat, 50), 2),
                "p95": round(percentile(lat, 95), 2),
                "p99": round(percentile(lat, 99), 2),
                "max": round(max(lat), 2) if lat else None,
                "mean": round(sum(lat) / len(lat), 2) if lat else None,
            },
        }


def expect(response: httpx.Response, status: int) -> Any:
    """The response's JSON if it has `status`; else an AssertionError naming the status (and a JSON error body)."""
    if response.status_code != status:
        detail = response.text[:150] if response.headers.get("content-type", "").startswith("application/json") else ""
        raise AssertionError(f"HTTP {response.status_code} {detail}".strip())
    return response.json()


# A request function: given a client and its base URL, make one request and return how many
# units it produced; raise (or return None) on failure.
RequestFn = Callable[[httpx.AsyncClient, int], Awaitable[int]]


async def closed_loop(
    base_urls: list[str],
    headers: list[dict[str, str]],
    clients: int,
    request: RequestFn,
    *,
    duration_s: float,
    max_requests: int,
    warmup_requests: int = 3,
) -> LoadResult:
    """`clients` concurrent clients, each sending its next request when the last one answered.

    Client i talks to base_urls[i % len] with headers[i % len]. Each client first sends a few
    untimed warm-up requests; then all start together and run until `duration_s` has passed or
    `max_requests` requests were sent in all.
    """
    result = LoadResult(clients=clients, elapsed_s=0.0)
    budget = max_requests
    start_gate = asyncio.Event()
    deadline = math.inf

    async def one(client: httpx.AsyncClient, index: int, timed: bool) -> None:
        nonlocal budget
        t0 = time.perf_counter()
        try:
            units = await request(client, index)
        except (httpx.HTTPError, AssertionError, ValueError, KeyError) as exc:
            if timed:
                key = str(exc) if isinstance(exc, AssertionError) else type(exc).__name__
                result.errors[key] = result.errors.get(key, 0) + 1
            return
        if timed:
            result.latencies_ms.append((time.perf_counter() - t0) * 1000)
            result.units += units

    async def worker(index: int) -> None:
        nonlocal budget
        url = base_urls[index % len(base_urls)]
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, headers=headers[index % len(headers)], limits=limits, timeout=30) as client:
            for _ in range(warmup_requests):
                await one(client, index, timed=False)
            ready.append(index)
            if len(ready) == clients:
                start_gate.set()
            await start_gate.wait()
            while time.perf_counter() < deadline and budget > 0:
                budget -= 1
                await one(client, index, timed=True)

    ready: list[int] = []
    tasks = [asyncio.create_task(worker(i)) for i in range(clients)]
    await start_gate.wait()
    t_start = time.perf_counter()
    deadline = t_start + duration_s
    await asyncio.gather(*tasks)
    result.elapsed_s = time.perf_counter() - t_start
    return result


# --- what the machine and the database did during a scenario ----------------------------------


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def _process_jiffies(pid: int) -> int:
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(parts[11]) + int(parts[12])  # utime + stime


class Observer:
    """Samples, during a scenario: CPU use (all, this process, the servers), database sessions.

    `db_peak_backends` is the most connections to the scratch database open at once (sampled
    every 0.2 s); `db_commits` counts transactions, including every autocommitted statement.
    """

    def __init__(self, database_url: str, server_pids: list[int]) -> None:
        self.database_url = database_url
        self.server_pids = server_pids
        self.peak_backends = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _db_stats(self, conn: psycopg.Connection[Any]) -> tuple[int, int, int]:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT sessions, numbackends, xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)

    def __enter__(self) -> Observer:
        self._conn = psycopg.connect(self.database_url, autocommit=True)
        self._start_db = self._db_stats(self._conn)
        self._start_cpu = _cpu_jiffies()
        self._start_self = os.times()
        self._start_servers = sum(_process_jiffies(pid) for pid in self.server_pids)
        self._start_load = os.getloadavg()
        self._start_wall = time.perf_counter()

        def sample() -> None:
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                while not self._stop.wait(0.2):
                    self.peak_backends = max(self.peak_backends, self._db_stats(conn)[1] - 1)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        wall = time.perf_counter() - self._start_wall
        busy, total = _cpu_jiffies()
        hz = os.sysconf("SC_CLK_TCK")
        end_self = os.times()
        db = self._db_stats(self._conn)
        self._conn.close()
        cpus = os.cpu_count() or 1
        self.report = {
            "cpu_busy_pct_all_cores": round(100 * (busy - self._start_cpu[0]) / max(1, total - self._start_cpu[1]), 1),
            "cpu_s_servers": round((sum(_process_jiffies(pid) for pid in self.server_pids) - self._start_servers) / hz, 2),
            "cpu_s_client": round((end_self.user - self._start_self.user) + (end_self.system - self._start_self.system), 2),
            "cpu_s_available": round(wall * cpus, 2),
            "loadavg_1m_start_end": [round(self._start_load[0], 2), round(os.getloadavg()[0], 2)],
            # The observer's own two connections are excluded.
            "db_peak_backends": self.peak_backends - 1,
            "db_commits": db[2] - self._start_db[2],
        }


def database_sessions(database_url: str, timeout: float = 15.0) -> int:
    """Connections ever opened to this database (pg_stat_database.sessions), read once no other
    session is left: a backend reports its session when it flushes its statistics, at the latest
    when it exits, so the figure is exact only after the servers have stopped."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()").fetchone()
            if row and row[0] <= 1:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()").fetchone()
        return int(row[0]) if row else 0


# --- machine description -----------------------------------------------------------------------


def machine_info(database_url: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(Exception), psycopg.connect(database_url or ADMIN_URL) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        info["postgresql"] = row[0] if row else None
        for setting in ("shared_buffers", "work_mem", "synchronous_commit", "max_connections"):
            row = conn.execute(f"SHOW {setting}").fetchone()
            info[f"pg_{setting}"] = row[0] if row else None
    return info


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


# --- WSGI servers under gunicorn, and a lean HTTP/1.1 client ----------------------------------


@contextlib.contextmanager
def gunicorn_server(
    env: dict[str, str], app: str, workers: int, log_file: Path, source: Path = REPO, health: str = "/healthz"
) -> Iterator[Server]:
    """`app` under gunicorn with `workers` sync worker processes on one free loopback port.

    Waits until `health` answers (for /healthz: with the database check passing) and stops the
    whole process group on exit. Sync workers close the connection after every response.
    """
    port = free_port()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}", "--no-control-socket", app],
            cwd=source,
            env={**env, "PYTHONPATH": str(source)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{log_file.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = httpx.get(url + health, timeout=2)
                if health != "/healthz" and r.status_code == 200:
                    break
                if health == "/healthz" and r.json().get("checks", {}).get("database", {}).get("ok"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url}{health} did not answer in 60 s:\n{log_file.read_text()[-3000:]}")
            time.sleep(0.2)
        log(f"gunicorn {app} with {workers} worker(s) up on {url}")
        yield Server(url, proc.pid)
    finally:
        _stop(proc)


class LeanHTTP:
    """One HTTP/1.1 connection to a loopback server, reopened whenever the server closes it.

    A load generator on the same two cores as the servers must cost as little as it can: this one
    writes prepared bytes and reads the status line, the headers and the body, nothing more
    (httpx spends about a millisecond of CPU per request, which the faster server would pay for).
    """

    def __init__(self, url: str) -> None:
        host_port = url.split("://", 1)[1].rstrip("/")
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @staticmethod
    def prepare(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length: int | None = None
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await (self.reader.readexactly(length) if length is not None else self.reader.read())
        if close or length is None:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None
