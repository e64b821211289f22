"""Load: a ramp of closed-loop HTTP clients on the whole portal until p95 crosses 250 ms, then the invariants.

The portal runs in its production shape on a scratch PostgreSQL database and a Redis of its own
(port 6393, never the shared one): plain HTTP (pages and API) from `grid.wsgi:application` under
gunicorn sync workers (2 by default), websockets from uvicorn (`grid.asgi:application`, 2 processes
by default, one port each, as docs/telemetry.md deploys them), the Celery worker (two processes)
and beat (admission and sync every GRID_CYCLE_S, production's 2 s by default; the simulated grid at
120x speed, no random failures). Demo teams and users, rate cards for this month, the pending-job
limits lifted.

The websocket watchers (dashboards and job pages) connect to the uvicorn ports first and stay
connected throughout; step 0 measures them, Celery and beat alone (`--idle` seconds, no HTTP
client). Then the HTTP clients ramp, step by step (1, 2, 3, 4, 6, 8, ... clients by
default): each client is a closed loop (its next request when the last one answered, no think
time) over one connection to gunicorn (reopened, as sync workers close it after every response),
drawing each request from the same mix: submits (single jobs and 2-4-element arrays, API
token), cancels of its own recent jobs, API job list and job detail, and signed-in page views (the
dashboard, the job list page, a job page). A step adds its clients, lets them run `--warmup`
seconds, then measures `--window` seconds: requests/s, p50/p95/p99 overall and per kind, errors,
websocket frames, and the CPU each part of the portal used. The ramp stops after the first step
whose p95 is over `--p95-ms` (250), or after the last step; the knee is the last step under and the
first over. A sampler checks every half second that no team holds more GPUs of a model than its
limit. Then the portal settles and every invariant is checked over all that happened in all steps:
every acknowledged job present, each acknowledged submit created its elements exactly once and
nothing else was created, no job on the grid twice, no job admitted more often than it was
queued, every acknowledged cancel left its job cancelled and off the grid, every drafted invoice
equal to its metered usage x rate.

Prints a table per step, writes bench/results/load.json and prints a JSON object as its last line
(requests_per_s_at_knee, p95_ms_at_knee, first_over, steps, invariants_ok, ...). Exits 1 when an
invariant fails.

    flock /tmp/bench.lock .venv/bin/python bench/load.py                     # ~3-4 min
    .venv/bin/python bench/load.py --steps 1,2,4,8,16 --window 10 --watchers 30
    .venv/bin/python bench/load.py --duration 600 --clients 4               # steady: one step, no stop at the knee

The code measured is a copy of the last commit (git archive), so edits to the checkout during a
run cannot mix versions; `--working-tree` runs the checkout as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import websockets

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._server import LeanHTTP, exit_cleanly_on_sigterm, log, machine_info, percentile, source_tree  # noqa: E402
from tests.stack import QUICK_GRID, OwnRedis, Stack, free_port, portal_env, query, scratch_database, wait_for  # noqa: E402

RESULTS = REPO / "bench" / "results"
USERS = {"alice": "vision", "bob": "vision", "carol": "render", "dave": "climate", "erin": "climate"}
MODELS = {"vision": ("a100", "h100"), "render": ("a100",), "climate": ("a100", "h100")}
DEFAULT_LIMIT = 16
# The mix every client draws its requests from (weights, per cent).
MIX = {
    "submit": 22, "array": 6, "cancel": 6, "list": 20, "detail": 20,
    "dashboard": 8, "jobs_page": 8, "job_page": 10,
}  # fmt: skip
KINDS = tuple(MIX)
DEFAULT_STEPS = "1,2,3,4,6,8,12,16,24,32,48,64"
REQUEST_TIMEOUT_S = 30.0


# --- the portal: gunicorn for HTTP, uvicorn for websockets, the Celery worker and beat ------------


@dataclass
class SplitPortal(Stack):
    """tests.stack.Stack with its web part split as deployed: gunicorn sync workers on `port` for plain
    HTTP, uvicorn processes on `ws_ports` for websockets; every process runs the code in `source`."""

    source: Path = REPO
    http_workers: int = 2
    ws_ports: list[int] = field(default_factory=list)

    def ws_base(self, index: int) -> str:
        return f"127.0.0.1:{self.ws_ports[index % len(self.ws_ports)]}"

    def command(self, name: str) -> list[str]:
        python = sys.executable
        if name == "web":
            return [
                python, "-m", "gunicorn", "-w", str(self.http_workers), "-b", f"127.0.0.1:{self.port}",
                "--no-control-socket", "grid.wsgi:application",
            ]  # fmt: skip
        if name.startswith("ws-"):
            return [
                python, "-m", "uvicorn", "grid.asgi:application", "--host", "127.0.0.1",
                "--port", str(self.ws_ports[int(name[3:])]), "--ws-per-message-deflate", "false",
                "--lifespan", "off", "--no-access-log", "--log-level", "warning",
            ]  # fmt: skip
        return super().command(name)

    def manage(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=self.source, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def start(self, name: str) -> None:
        out = (self.logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            self.command(name), cwd=self.source, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()


def answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


@contextlib.contextmanager
def split_portal(
    database_url: str, redis_url: str, folder: Path, source: Path, http_workers: int, ws_servers: int, **extra: str
) -> Iterator[SplitPortal]:
    """Migrate and seed (demo teams and users, no jobs), start gunicorn, uvicorn, worker and beat, wait for /healthz."""
    folder.mkdir(parents=True, exist_ok=True)
    env = portal_env(database_url, redis_url, folder, **{**QUICK_GRID, **extra, "PYTHONPATH": str(source)})
    portal = SplitPortal(env, folder, source=source, http_workers=http_workers, ws_ports=[free_port() for _ in range(ws_servers)])
    try:
        portal.manage("migrate", "--noinput")
        portal.manage("seed_demo", "--jobs", "0")
        for name in ("web", *(f"ws-{i}" for i in range(ws_servers)), "worker", "beat"):
            portal.start(name)
        portal.wait_healthy(90)  # gunicorn answers, with the database, Redis and a worker heartbeat
        for base in map(portal.ws_base, range(ws_servers)):
            wait_for(functools.partial(answers, f"http://{base}/livez"), 60, f"uvicorn on {base}", 0.2)
        log(
            f"portal up: gunicorn x{http_workers} on {portal.url}, uvicorn on {', '.join(map(portal.ws_base, range(ws_servers)))}"
        )
        yield portal
    finally:
        # Stopping takes up to 25 s a process; a second signal (a script's SIGINT, then SIGTERM) must not cut it short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for name in list(portal.processes):
            portal.stop(name)


# --- CPU used by each part, from /proc -------------------------------------------------------------


def cpu_by_part(parts: dict[int, str], redis_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of each part: the process sessions in `parts` (session id -> part), every
    `postgres` process (the postmaster's children's time counts once they have exited), the Redis,
    this process (the clients), and the whole machine's busy time."""
    hz = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = defaultdict(float)
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        comm = raw[raw.find("(") + 1 : raw.rfind(")")]
        fields = raw[raw.rfind(")") + 2 :].split()
        pid, session = int(entry.name), int(fields[3])
        # utime + stime, and the time of children it has reaped (a backend, a prefork child)
        ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        if session in parts:
            used[parts[session]] += ticks / hz
        elif comm == "postgres":
            used["postgres"] += ticks / hz
        elif pid == redis_pid:
            used["redis"] += ticks / hz
        elif pid == me:
            used["client"] += (int(fields[11]) + int(fields[12])) / hz
    machine = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    used["machine_busy"] = (sum(machine[:8]) - machine[3] - machine[4]) / hz
    return dict(used)


# --- what the clients saw --------------------------------------------------------------------------


@dataclass
class Step:
    index: int
    clients: int
    started: float = 0.0  # time.monotonic() of the window
    ended: float = 0.0
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)  # kind: 5xx, refused connection, timeout
    refused: Counter[str] = field(default_factory=Counter)  # kind:status for a 4xx (a cancel of a job that just ended)
    cpu: dict[str, float] = field(default_factory=dict)
    loadavg: float = 0.0  # the 1-minute load average at the window's end

    def summary(self) -> dict[str, Any]:
        window = self.ended - self.started
        everything = [x for v in self.latency_ms.values() for x in v]
        p = {q: round(percentile(everything, q), 1) if everything else None for q in (50, 95, 99)}
        cores = {part: round(s / window, 2) for part, s in sorted(self.cpu.items())}
        return {
            "step": self.index + 1,
            "clients": self.clients,
            "window_s": round(window, 1),
            "requests": len(everything),
            "requests_per_s": round(len(everything) / window, 1),
            "p50_ms": p[50],
            "p95_ms": p[95],
            "p99_ms": p[99],
            "max_ms": round(max(everything), 1) if everything else None,
            "errors": sum(self.errors.values()),
            "errors_by_kind": dict(self.errors),
            "refused_4xx": dict(self.refused),
            "by_kind": {
                kind: {
                    "count": len(v),
                    "per_s": round(len(v) / window, 1),
                    "p50_ms": round(percentile(v, 50), 1),
                    "p95_ms": round(percentile(v, 95), 1),
                }
                for kind, v in sorted(self.latency_ms.items())
            },
            # CPU cores each part kept busy on average during the window (machine_busy: all processes, of os.cpu_count())
            "cpu_cores": cores,
            "loadavg_1m": round(self.loadavg, 2),
        }


@dataclass
class Run:
    """Everything the clients, the watchers and the sampler saw over the whole ramp."""

    step: Step | None = None  # the step whose window is open
    stopping: bool = False
    ledger: dict[int, str] = field(default_factory=dict)  # job id -> submitter
    team_jobs: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    user_jobs: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    elements: dict[str, int] = field(default_factory=dict)  # acknowledged submit's name -> elements created
    unanswered: set[str] = field(default_factory=set)  # names of submits answered no 201 (may have been created)
    cancelled: set[int] = field(default_factory=set)  # jobs whose cancel answered 200 with state cancelled
    requests: Counter[str] = field(default_factory=Counter)  # every request, in or out of a window
    errors: Counter[str] = field(default_factory=Counter)
    frames: list[tuple[float, float, str]] = field(default_factory=list)  # (monotonic, wall clock, raw) per ws frame
    ws_connects_ms: list[float] = field(default_factory=list)
    ws_drops: list[float] = field(default_factory=list)  # monotonic time of each lost or refused websocket
    over_limit: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0

    def note_jobs(self, user: str, ids: list[int]) -> None:
        for job_id in ids:
            self.ledger[job_id] = user
        self.team_jobs[USERS[user]].extend(ids)
        self.user_jobs[user].extend(ids)


@dataclass
class Client:
    index: int
    user: str
    token: str
    session: str
    rng: random.Random
    seq: int = 0

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        headers = {"Authorization": f"Token {self.token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return LeanHTTP.prepare(method, path, headers, json.dumps(body).encode() if body is not None else b"")

    def page(self, path: str) -> bytes:
        return LeanHTTP.prepare("GET", path, {"Cookie": f"sessionid={self.session}", "Accept": "text/html"}, b"")


def next_request(client: Client, run: Run) -> tuple[str, bytes, dict[str, Any]]:
    """(kind, raw request, what to remember) drawn from MIX; a cancel with nothing of its own to cancel submits."""
    rng, team = client.rng, USERS[client.user]
    kind = rng.choices(KINDS, weights=[MIX[k] for k in KINDS])[0]
    mine, ours = run.user_jobs[client.user], run.team_jobs[team]
    if kind == "cancel" and not mine:
        kind = "submit"
    if kind in ("detail", "job_page") and not ours:
        kind = "list"
    if kind in ("submit", "array"):
        client.seq += 1
        name = f"load-{client.user}-{client.index}-{client.seq}"
        body: dict[str, Any] = {
            "name": name, "command": ["train"], "gpu_model": rng.choice(MODELS[team]),
            "gpus_per_node": rng.choice((1, 2, 4)), "walltime": rng.choice((300, 900, 1800)),
        }  # fmt: skip
        if kind == "array":
            body["array"] = f"0-{rng.randrange(1, 4)}"
        return kind, client.api("POST", "/api/v1/jobs/", body), {"name": name}
    if kind == "cancel":
        job_id = rng.choice(mine[-50:])  # a recent one: most likely still queued or running
        return kind, client.api("POST", f"/api/v1/jobs/{job_id}/cancel/", {"reason": "load"}), {"job": job_id}
    if kind == "list":
        return kind, client.api("GET", "/api/v1/jobs/?mine=false"), {}
    if kind == "detail":
        return kind, client.api("GET", f"/api/v1/jobs/{rng.choice(ours)}/"), {}
    if kind == "dashboard":
        return kind, client.page("/"), {}
    if kind == "jobs_page":
        return kind, client.page("/jobs/"), {}
    return kind, client.page(f"/jobs/{rng.choice(ours)}/"), {}


def remember(run: Run, client: Client, kind: str, status: int, body: bytes, note: dict[str, Any]) -> None:
    if kind in ("submit", "array"):
        if status == 201:
            data = json.loads(body)
            ids = [int(i) for i in (data.get("ids") or [data["id"]])]
            run.note_jobs(client.user, ids)
            run.elements[note["name"]] = len(ids)
        else:
            run.unanswered.add(note["name"])
    elif kind == "cancel" and status == 200 and json.loads(body).get("state") == "cancelled":
        run.cancelled.add(note["job"])


async def http_client(url: str, client: Client, run: Run) -> None:
    conn = LeanHTTP(url)
    try:
        while not run.stopping:
            kind, raw, note = next_request(client, run)
            started = time.perf_counter()
            status, body = 0, b""
            try:
                status, body = await asyncio.wait_for(conn.request(raw), REQUEST_TIMEOUT_S)
            except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                await conn.close()
            elapsed_ms = (time.perf_counter() - started) * 1000
            run.requests[kind] += 1
            remember(run, client, kind, status, body, note)
            step = run.step
            if status == 0 or status >= 500:
                run.errors[f"{kind}:{status or 'no answer'}"] += 1
                if step is not None:
                    step.errors[kind] += 1
                continue
            if step is not None:
                step.latency_ms[kind].append(elapsed_ms)
                if status >= 400:
                    step.refused[f"{kind}:{status}"] += 1
    finally:
        await conn.close()


async def watcher(portal: SplitPortal, index: int, session: str, path: str, run: Run) -> None:
    """One live page on uvicorn process `index mod n`: keeps every frame with its arrival time and
    reconnects (0.5 s later) whenever the socket is lost or refused."""
    base = portal.ws_base(index)
    headers = {"Cookie": f"sessionid={session}", "Origin": f"http://{base}"}
    while not run.stopping:
        started = time.perf_counter()
        try:
            async with websockets.connect(f"ws://{base}{path}", additional_headers=headers, open_timeout=10) as socket_:
                first = True
                while not run.stopping:
                    try:
                        raw = await asyncio.wait_for(socket_.recv(), timeout=0.5)
                    except TimeoutError:
                        continue
                    if first:
                        run.ws_connects_ms.append((time.perf_counter() - started) * 1000)
                        first = False
                    run.frames.append((time.monotonic(), time.time(), raw if isinstance(raw, str) else raw.decode()))
        except (OSError, websockets.WebSocketException):
            run.ws_drops.append(time.monotonic())
            await asyncio.sleep(0.5)


LIMITS_SQL = """
SELECT t.slug, j.gpu_model, sum(j.gpus), coalesce(max(q."limit"), %s)
FROM jobs_job j JOIN portal_team t ON t.id = j.team_id
LEFT JOIN quotas_teamquota q ON q.team_id = j.team_id AND q.gpu_model = j.gpu_model
WHERE j.state IN ('admitted', 'dispatched', 'running', 'preempting')
GROUP BY t.slug, j.gpu_model
"""


async def sampler(db: str, run: Run, done: asyncio.Event) -> None:
    """Every half second: the GPUs each team holds per model against its limit (one connection throughout)."""
    async with await psycopg.AsyncConnection.connect(db.replace("postgres://", "postgresql://"), autocommit=True) as conn:
        while not done.is_set():
            rows = await (await conn.execute(LIMITS_SQL, (DEFAULT_LIMIT,))).fetchall()
            run.samples += 1
            run.over_limit += [{"team": t, "model": m, "held": int(h), "limit": int(lim)} for t, m, h, lim in rows if h > lim]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.5)


# --- the ramp ----------------------------------------------------------------------------------------


TABLE_KINDS = ("submit", "array", "cancel", "list", "detail", "dashboard", "jobs_page", "job_page")


def table_header() -> str:
    kinds = " ".join(f"{k[:9]:>9}" for k in TABLE_KINDS)
    head = f"{'step':>4} {'clients':>7} {'req/s':>7} {'p50':>7} {'p95':>7} {'p99':>7} {'err':>4} | p95 ms by kind: {kinds} | ws/s"
    return head + " | cores: gunicorn uvicorn celery postgres redis client other machine"


def table_row(s: dict[str, Any], ws_per_s: float) -> str:
    by_kind = s["by_kind"]
    kinds = " ".join(f"{by_kind[k]['p95_ms'] if k in by_kind else '-':>9}" for k in TABLE_KINDS)
    c = s["cpu_cores"]
    cores = " ".join(
        f"{c.get(p, 0.0):>{w}.2f}"
        for p, w in (
            ("gunicorn", 8),
            ("uvicorn", 7),
            ("celery", 6),
            ("postgres", 8),
            ("redis", 5),
            ("client", 6),
            ("other", 5),
            ("machine_busy", 7),
        )
    )
    return (
        f"{s['step']:>4} {s['clients']:>7} {s['requests_per_s']:>7} {s['p50_ms'] or '-':>7} {s['p95_ms'] or '-':>7} {s['p99_ms'] or '-':>7} "
        f"{s['errors']:>4} |                 {kinds} | {ws_per_s:>4} |        {cores}"
    )


async def ramp(
    portal: SplitPortal,
    db: str,
    creds: dict[str, dict[str, str]],
    parts: dict[int, str],
    redis_pid: int | None,
    args: argparse.Namespace,
) -> tuple[Run, dict[str, Any] | None, list[dict[str, Any]]]:
    run, rng = Run(), random.Random(7)
    names = list(USERS)
    # One job per team to watch from job pages (submitted before anything is measured).
    watched: dict[str, int] = {}
    for user in ("alice", "carol", "dave"):
        seed = Client(-1, user, creds[user]["token"], creds[user]["session"], rng)
        raw = seed.api(
            "POST",
            "/api/v1/jobs/",
            {"name": f"watched-{user}", "command": ["x"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": 1800},
        )
        status, body = await LeanHTTP(portal.url).request(raw)
        assert status == 201, f"seed submit answered {status}: {body[:300]!r}"
        job_id = int(json.loads(body)["id"])
        run.note_jobs(user, [job_id])
        run.elements[f"watched-{user}"] = 1
        watched[USERS[user]] = job_id

    done = asyncio.Event()
    background = [asyncio.create_task(sampler(db, run, done))]
    for i in range(args.watchers):
        user = names[i % len(names)]
        path = "/ws/grid/" if i % 2 == 0 else f"/ws/jobs/{watched[USERS[user]]}/"
        background.append(asyncio.create_task(watcher(portal, i, creds[user]["session"], path, run)))
    await asyncio.sleep(args.ws_warmup)  # every page loaded before the first step
    log(f"{args.watchers} watchers connected ({len(run.ws_connects_ms)} first frames, {len(run.ws_drops)} failures)")

    async def measure(step: Step, seconds: float) -> dict[str, Any]:
        """Open the step's window for `seconds`; its figures, with the CPU each part used meanwhile."""
        step.cpu = cpu_by_part(parts, redis_pid)
        step.started = time.monotonic()
        run.step = step
        await asyncio.sleep(seconds)
        run.step = None
        step.ended = time.monotonic()
        after = cpu_by_part(parts, redis_pid)
        step.cpu = {part: after.get(part, 0.0) - step.cpu.get(part, 0.0) for part in after}
        # what no part of the portal or the client used: other work on the machine, the kernel
        step.cpu["other"] = step.cpu["machine_busy"] - sum(v for k, v in step.cpu.items() if k != "machine_busy")
        step.loadavg = os.getloadavg()[0]
        summary = step.summary()
        frames = sum(1 for at, _, _ in run.frames if step.started <= at <= step.ended)
        summary["ws_frames_per_s"] = round(frames / (step.ended - step.started), 1)
        summary["ws_drops"] = sum(1 for at in run.ws_drops if step.started <= at <= step.ended)
        print(table_row(summary, summary["ws_frames_per_s"]), flush=True)
        return summary

    clients: list[asyncio.Task[None]] = []
    summaries: list[dict[str, Any]] = []
    print(table_header(), flush=True)
    try:
        # Step 0: no HTTP client, the watchers only: what the websockets, Celery and beat cost by themselves.
        idle = await measure(Step(-1, 0), args.idle) if args.idle > 0 else None
        for index, count in enumerate(args.schedule):
            while len(clients) < count:
                i = len(clients)
                user = names[i % len(names)]
                client = Client(i, user, creds[user]["token"], creds[user]["session"], random.Random(rng.random()))
                clients.append(asyncio.create_task(http_client(portal.url, client, run)))
            await asyncio.sleep(args.warmup)
            summary = await measure(Step(index, count), args.window)
            summaries.append(summary)
            if args.duration is None and over(summary, args.p95_ms):
                break
    finally:
        run.stopping = True
        results = await asyncio.gather(*clients, return_exceptions=True)
        for failed in (r for r in results if isinstance(r, BaseException)):
            log(f"a client failed: {failed!r}")
        done.set()
        await asyncio.gather(*background, return_exceptions=True)
    return run, idle, summaries


# --- afterwards ------------------------------------------------------------------------------------


INVOICE_CHECK = """
import json
from collections import defaultdict
from decimal import Decimal
from django.utils import timezone
from billing import pricing, services
from billing.metering import month_of
from billing.models import Invoice, RateCard, UsageRecord
month = month_of(timezone.now())
metered = services.meter_month(month)
report = services.draft_month(month)
expected = defaultdict(lambda: Decimal("0.00"))
groups = defaultdict(Decimal)
for r in UsageRecord.objects.filter(month=month):
    groups[(r.team_id, r.gpu_model, r.pool, r.pool_kind, r.rate_card_id)] += r.gpu_seconds
cards = RateCard.objects.in_bulk({k[4] for k in groups})
for key, seconds in groups.items():
    expected[key[0]] += pricing.line_amount(seconds, Decimal(cards[key[4]].per_gpu_hour))
invoices = {i.team_id: i.total for i in Invoice.objects.filter(month=month)}
print(json.dumps({"records": metered, "failed": report.failed, "invoices": len(invoices),
    "mismatches": {str(t): [str(invoices.get(t)), str(v)] for t, v in expected.items() if invoices.get(t) != v},
    "total": str(sum(invoices.values(), Decimal(0)))}))
"""

RATES = """
from decimal import Decimal
from billing import services
from django.utils import timezone
first = timezone.now().date().replace(day=1)
for model, kind, rate in [("a100", "onprem", "2.10"), ("h100", "onprem", "3.40"), ("a10g", "cloud", "1.20"), ("a100", "cloud", "3.00"), ("h100", "cloud", "4.50")]:
    services.add_rate_card(gpu_model=model, pool_kind=kind, per_gpu_hour=Decimal(rate), valid_from=first)
"""


def check_invariants(portal: SplitPortal, db: str, run: Run) -> dict[str, Any]:
    jobs = {int(i): (name, state) for i, name, state in query(db, "SELECT id, name, state FROM jobs_job")}
    created = Counter(name.split("[", 1)[0] for name, _ in jobs.values())  # an array's elements are NAME[i]
    on_grid = dict(query(db, "SELECT portal_job_id, count(*) FROM cluster_simjob GROUP BY portal_job_id"))
    admitted = dict(query(db, "SELECT job_id, count(*) FROM jobs_jobevent WHERE to_state = 'admitted' GROUP BY job_id"))
    queued = dict(
        query(db, "SELECT job_id, count(*) FROM jobs_jobevent WHERE to_state IN ('pending', 'requeued') GROUP BY job_id")
    )
    live_on_grid = {
        int(j)
        for (j,) in query(db, "SELECT portal_job_id FROM cluster_simjob WHERE state IN ('pending', 'running')")
        if int(j) in run.cancelled
    }
    missing = sorted(set(run.ledger) - set(jobs))
    miscounted = {n: [k, created.get(n, 0)] for n, k in run.elements.items() if created.get(n, 0) != k}
    unexplained = sorted(
        j for j, (name, _) in jobs.items() if j not in run.ledger and name.split("[", 1)[0] not in run.unanswered
    )
    uncancelled = sorted(j for j in run.cancelled if jobs.get(j, ("", ""))[1] != "cancelled")
    invoices = json.loads(portal.manage("shell", "-c", INVOICE_CHECK).strip().splitlines()[-1])
    checks = {
        f"no team over its GPU limit (all {run.samples} samples)": not run.over_limit,
        "every acknowledged job present": not missing,
        "each acknowledged submit created its elements exactly once": not miscounted,
        "no job that was not acknowledged (beyond submits answered no 201)": not unexplained,
        "no job on the grid twice": max(on_grid.values(), default=1) == 1,
        "admitted at most once per time queued": all(n <= queued.get(j, 0) for j, n in admitted.items()),
        "every acknowledged cancel left its job cancelled": not uncancelled,
        "no cancelled job still queued or running on the grid": not live_on_grid,
        "invoices equal metered usage x rate": not invoices["mismatches"] and not invoices["failed"],
    }
    return {
        "ok": all(checks.values()),
        "checks": checks,
        "passed": sum(checks.values()),
        "of": len(checks),
        "jobs": len(jobs),
        "jobs_acknowledged": len(run.ledger),
        "submits_answered_no_201": len(run.unanswered),
        "cancels_acknowledged": len(run.cancelled),
        "on_grid": len(on_grid),
        "states": dict(Counter(state for _, state in jobs.values())),
        "invoices": invoices,
        "limit_samples": run.samples,
        "over_limit": run.over_limit[:10],
        "examples": {
            "missing": missing[:10],
            "miscounted": dict(list(miscounted.items())[:10]),
            "unexplained": unexplained[:10],
            "uncancelled": uncancelled[:10],
            "cancelled_but_live_on_grid": sorted(live_on_grid)[:10],
        },
    }


def websocket_summary(run: Run, started: float, ended: float) -> dict[str, Any]:
    """Frames over the whole ramp; a transition's commit to the watching socket, from the pages' ticks."""
    lag_ms: list[float] = []
    frames = 0
    for at, wall, raw in run.frames:
        if not started <= at <= ended:
            continue
        frames += 1
        message = json.loads(raw)
        if message.get("type") == "tick":
            lag_ms += [(wall - datetime.fromisoformat(e["at"]).timestamp()) * 1000 for e in message.get("events", [])]
    return {
        "frames": frames,
        "frames_per_s": round(frames / max(ended - started, 1e-9), 1),
        "connect_to_first_frame_p50_ms": round(percentile(run.ws_connects_ms, 50), 1),
        "connect_to_first_frame_p95_ms": round(percentile(run.ws_connects_ms, 95), 1),
        "connects": len(run.ws_connects_ms),
        "drops_or_refusals": len(run.ws_drops),
        "event_lag_p50_ms": round(percentile(lag_ms, 50), 1),
        "event_lag_p95_ms": round(percentile(lag_ms, 95), 1),
        "events_seen": len(lag_ms),
    }


def over(summary: dict[str, Any], threshold: float) -> bool:
    """Whether a step's p95 is over the threshold (a step that got no answer at all is)."""
    return summary["p95_ms"] is None or bool(summary["p95_ms"] > threshold)


def knee(summaries: list[dict[str, Any]], threshold: float) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the last step with p95 at or under the threshold before the first over it, the first over it)."""
    first_over = next((s for s in summaries if over(s, threshold)), None)
    before = summaries[: summaries.index(first_over)] if first_over else summaries
    return (before[-1] if before else None), first_over


def calibration_ms() -> float:
    """The best of three runs of a fixed pure-Python loop: how fast this machine's cores are right now
    (runs on the same machine differ by tens of per cent; compare their figures with this beside them)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        sum(i * i for i in range(1_000_000))
        best = min(best, (time.perf_counter() - started) * 1000)
    return round(best, 1)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default=DEFAULT_STEPS, help="HTTP clients at each step, comma separated (default %(default)s)")
    parser.add_argument("--p95-ms", type=float, default=250.0, help="stop after the first step whose p95 is over this")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds a step runs before its window")
    parser.add_argument("--window", type=float, default=20.0, help="seconds a step is measured")
    parser.add_argument("--duration", type=float, default=None, help="steady load instead: --clients for this long, no ramp")
    parser.add_argument("--clients", type=int, default=4, help="clients of the steady load (--duration)")
    parser.add_argument("--watchers", type=int, default=30, help="websockets (half dashboards, half job pages)")
    parser.add_argument("--idle", type=float, default=8.0, help="seconds measured with no HTTP client first (step 0)")
    parser.add_argument("--ws-warmup", type=float, default=4.0, help="seconds the watchers connect before the first step")
    parser.add_argument("--http-workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--ws-servers", type=int, default=2, help="uvicorn processes, one port each")
    parser.add_argument("--grid-cycle-s", default="2.0", help="GRID_CYCLE_S: admission and sync (production: 2.0)")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds the portal settles before the invariants")
    parser.add_argument("--working-tree", action="store_true", help="run the checkout as it is, not a copy of HEAD")
    args = parser.parse_args()
    if args.duration is not None:
        args.schedule, args.window = [args.clients], args.duration
    else:
        args.schedule = [int(x) for x in args.steps.split(",") if x.strip()]
    return args


def main() -> None:
    args = parse_args()
    exit_cleanly_on_sigterm()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background by a script
    began = time.monotonic()
    calibration_before = calibration_ms()
    with (
        tempfile.TemporaryDirectory(prefix="portal-load-") as folder,
        OwnRedis(6393) as own,
        scratch_database(prefix="gridportal_load") as db,
    ):
        source, code = source_tree(Path(folder), args.working_tree)
        with split_portal(
            db,
            own.url,
            Path(folder) / "data",
            source,
            args.http_workers,
            args.ws_servers,
            GRID_CYCLE_S=args.grid_cycle_s,
            SIM_SPEED="120",
            DISPATCH_STALE_S="10",
            LOG_LEVEL="WARNING",
            MAX_PENDING_JOBS_PER_TEAM="10000000",
            MAX_PENDING_JOBS_PER_USER="10000000",
        ) as portal:
            portal.manage("shell", "-c", RATES)
            creds = portal.credentials(list(USERS))
            parts = {portal.processes["web"].pid: "gunicorn", portal.processes["worker"].pid: "celery"}
            parts[portal.processes["beat"].pid] = "celery"
            parts.update({p.pid: "uvicorn" for name, p in portal.processes.items() if name.startswith("ws-")})
            redis_pid = own.process.pid if own.process else None
            ramp_started = time.monotonic()
            run, idle, summaries = asyncio.run(ramp(portal, db, creds, parts, redis_pid, args))
            ramp_ended = time.monotonic()
            log(f"ramp done ({len(summaries)} steps); settling {args.settle:.0f} s")
            time.sleep(args.settle)  # admission, dispatch, cancels on the grid and sync catch up before counting
            invariants = check_invariants(portal, db, run)
            tracebacks = {
                p.name: p.read_text(errors="replace").count("Traceback (most recent call last)")
                for p in sorted(portal.logs.glob("*.log"))
            }
        machine = machine_info(db) | {"calibration_ms_before_after": [calibration_before, calibration_ms()]}
    under, over = knee(summaries, args.p95_ms)
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "layout": {
            "http": f"gunicorn grid.wsgi:application, {args.http_workers} sync workers",
            "websockets": f"uvicorn grid.asgi:application x{args.ws_servers}, one port each, no permessage-deflate",
            "celery": f"worker (prefork, concurrency 2) and beat, GRID_CYCLE_S={args.grid_cycle_s}",
            "redis": "own redis-server (cache, broker, channel layer)",
            "database": "scratch database on the shared PostgreSQL",
            "client": "bench._server.LeanHTTP in this process, one connection per client, closed loop, no think time",
        },
        "args": {k: v for k, v in vars(args).items() if k != "schedule"} | {"schedule": args.schedule},
        "mix_percent": MIX,
        "threshold_p95_ms": args.p95_ms,
        "crossed": over is not None,
        "knee": {"last_under": under, "first_over": over},
        "idle": idle,
        "steps": summaries,
        "websockets": websocket_summary(run, ramp_started, ramp_ended),
        "requests_all": sum(run.requests.values()),
        "errors_all": dict(run.errors),
        "server_tracebacks": tracebacks,
        "invariants": invariants,
        "code": code,
        "machine": machine,
        "run_s": round(time.monotonic() - began, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print()
    if under:
        print(
            f"knee: {under['clients']} clients {under['requests_per_s']} requests/s p95 {under['p95_ms']} ms (last step under {args.p95_ms:.0f} ms)"
        )
    if over:
        print(f"      {over['clients']} clients {over['requests_per_s']} requests/s p95 {over['p95_ms']} ms (first step over)")
    else:
        print(f"p95 never crossed {args.p95_ms:.0f} ms (last step {summaries[-1]['clients'] if summaries else '-'} clients)")
    for name, passed in invariants["checks"].items():
        print(f"  {'passed' if passed else 'FAILED'}  {name}")
    last_line = {
        "requests_per_s_at_knee": under["requests_per_s"] if under else None,
        "p95_ms_at_knee": under["p95_ms"] if under else None,
        "clients_at_knee": under["clients"] if under else None,
        "first_over": {k: over[k] for k in ("clients", "requests_per_s", "p95_ms")} if over else None,
        "crossed": over is not None,
        "steps": [{k: s[k] for k in ("clients", "requests_per_s", "p50_ms", "p95_ms", "errors")} for s in summaries],
        "invariants_ok": invariants["ok"],
        "invariants_passed": f"{invariants['passed']}/{invariants['of']}",
        "jobs": invariants["jobs"],
        "errors": sum(run.errors.values()),
        "layout": f"gunicorn x{args.http_workers} sync, uvicorn x{args.ws_servers}, celery worker + beat",
        "watchers": args.watchers,
        "commit": code["commit"][:7],
        "calibration_ms": machine["calibration_ms_before_after"],
    }
    print(json.dumps(last_line))
    sys.exit(0 if invariants["ok"] else 1)


if __name__ == "__main__":
    main()
