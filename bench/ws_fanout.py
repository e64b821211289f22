"""Live pages at scale: signed-in dashboards and job pages, one telemetry push a second through Redis.

Run by hand (take the machine's benchmark lock; others benchmark on the same cores):

    flock /tmp/bench.lock .venv/bin/python bench/ws_fanout.py --clients 2000 --json

What it does, on loopback only, cleaning up on exit (also on Ctrl-C and SIGTERM):
- a scratch PostgreSQL database with the simulated grid synced in; TEAMS teams of USERS_PER_TEAM
  researchers and one operator; JOBS jobs submitted through the service layer, admitted,
  dispatched and synced (most run, the rest wait, so the queue has rows per team); one signed-in
  session per client (each client sends its own cookie, as a browser would);
- `--servers` server processes (`--server`: uvicorn or daphne, one port each) with the Redis
  channel layer (REDIS_URL, database 14), serving each scenario's application;
- `--clients` websocket clients in two client processes: `--job-pages` of them on job pages
  (`/ws/jobs/<id>/` of a job of the client's team, the operator's clients on any job), the rest on
  the dashboard (`/ws/grid/`); a page counts as loaded once its first frames arrived (dashboard:
  snapshot and history charts; job page: snapshot). OUTSIDERS more clients each try a job of
  another team and must be refused (4403);
- once every page is loaded, this process does what the telemetry cycle does, once a second:
  `group_send` of the heat map to `grid` and of each watched job's GPU samples to `job.<id>`,
  stamped with a sequence number and the wall-clock time of sending; clients record the lag of
  each. Loss: pushes sent to a loaded page and not received within GRACE_S of the last one.
  Every frame a page receives is also checked: a job page only ever hears of its own job, a
  dashboard's queue breakdown names only its viewer's teams (`leaks` counts the others).

Scenarios, in one run, on the same machine, server, process count, clients and publisher:
- `portal`: the portal as deployed (`grid.asgi:application`): sign-in, per-message visibility
  checks, the dashboards' and job pages' own ticks (every 2 s and 1 s), all of it;
- `channels`: the bare reference (bench.ws_reference): a minimal Channels consumer per socket
  (no sign-in, no database, no ticks) that joins the page's group and forwards each push.

Prints a table, writes bench/results/ws_fanout.json, and prints one JSON object as its last line
(`p99_ms`, `lost`, `loaded` of the portal, and the reference's figures beside them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import (
    REPO,
    Server,
    data_dir,
    exit_cleanly_on_sigterm,
    free_port,
    log,
    machine_info,
    percentile,
    portal_env,
    scratch_database,
    server_errors,
    setup_django,
    wait_healthy,
    write_json,
)
from bench._server import _stop as stop_server

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
TARGET_P99_MS = 250.0
GRACE_S = 5.0  # how long clients keep listening after the last push
TEAMS = 4
USERS_PER_TEAM = 2
JOBS = 40
OUTSIDERS = 20
CLOSE_FORBIDDEN = 4403
LOADS_AT_ONCE = 50  # page loads in flight per client process
SCENARIOS = {"portal": "grid.asgi:application", "channels": "bench.ws_reference:application"}


@dataclass(frozen=True)
class Page:
    """One client: where it connects, as whom, and what it may hear of."""

    path: str
    cookie: str
    job_id: int  # 0: the dashboard
    teams: tuple[str, ...]  # the teams whose queue the viewer may see; () for an operator: all
    outsider: bool = False


# --- the clients (run in child processes) ---------------------------------------------------------


class Tally:
    def __init__(self) -> None:
        self.loaded = 0
        self.refused = 0
        self.failed: dict[str, int] = {}
        self.lags: dict[str, list[float]] = {"dashboard": [], "job": []}
        self.received: dict[str, int] = {"dashboard": 0, "job": 0}
        self.leaks = 0  # frames about another team's jobs
        self.frames = 0

    def failure(self, exc: BaseException) -> None:
        self.failed[type(exc).__name__] = self.failed.get(type(exc).__name__, 0) + 1

    def read(self, page: Page, frames: list[tuple[float, str]]) -> None:
        """Decode a page's frames once the run is over: decoding while receiving would add the
        client's own work to the lag it measures."""
        kind = "job" if page.job_id else "dashboard"
        seen: set[int] = set()
        for received, raw in frames:
            message = json.loads(raw)
            seq, sent = _stamp(message)
            if seq is not None and seq not in seen:
                seen.add(seq)
                self.lags[kind].append((received - sent) * 1000)
                self.received[kind] += 1
            self.leaks += _leaks(page, message)
        self.frames += len(frames)


async def _page(url: str, page: Page, loaded: asyncio.Event, stop: asyncio.Event, tally: Tally) -> list[tuple[float, str]]:
    from websockets.asyncio.client import connect

    frames: list[tuple[float, str]] = []
    headers = {"Cookie": page.cookie, "Origin": url}
    address = url.replace("http://", "ws://") + page.path
    try:
        async with connect(
            address, additional_headers=headers, max_size=None, open_timeout=120, ping_interval=None, compression=None
        ) as ws:
            closer = asyncio.get_running_loop().create_task(_close_when(stop, ws))
            async for raw in ws:
                frames.append((time.time(), str(raw)))
                if not loaded.is_set() and ('"type": "history"' in raw[:40] or '"type": "snapshot"' in raw[:40]):
                    tally.loaded += 1
                    loaded.set()
            closer.cancel()
    except Exception as exc:  # noqa: BLE001 - a failed client is counted, not fatal
        if page.outsider and _refused(exc):
            tally.refused += 1
        else:
            tally.failure(exc)
    finally:
        loaded.set()
    return frames


async def _close_when(stop: asyncio.Event, ws: Any) -> None:
    await stop.wait()
    await ws.close()


def _refused(exc: Exception) -> bool:
    """Whether the server turned the page away: closed 4403 (daphne), or its handshake answered 403 (uvicorn)."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    if isinstance(exc, ConnectionClosed):
        return exc.rcvd is not None and exc.rcvd.code == CLOSE_FORBIDDEN
    return isinstance(exc, InvalidStatus) and exc.response.status_code == 403


def _stamp(message: dict[str, Any]) -> tuple[int | None, float]:
    """The push's sequence number and send time, if the frame is one of the benchmark's pushes."""
    if "bench_seq" in message:
        return int(message["bench_seq"]), float(message["bench_sent"])
    if message.get("type") == "gpus" and "bench" in message.get("values", {}):
        return int(message["values"]["bench"]["seq"]), datetime.fromisoformat(message["t"]).timestamp()
    return None, 0.0


def _leaks(page: Page, message: dict[str, Any]) -> int:
    """1 if the frame tells this page about what its viewer may not see."""
    if page.job_id and message.get("type") in ("snapshot", "tick"):
        return int(message["job"]["id"] != page.job_id)
    if not page.job_id and message.get("type") == "grid" and page.teams:
        return int(any(row["team"] not in page.teams for row in message["queue"]["by_team"]))
    return 0


async def _clients(urls: list[str], pages: list[Page], offset: int, conn: Connection) -> None:
    tally = Tally()
    stop = asyncio.Event()
    gate = asyncio.Semaphore(LOADS_AT_ONCE)
    tasks = []
    for i, page in enumerate(pages):
        loaded = asyncio.Event()
        await gate.acquire()
        tasks.append(asyncio.create_task(_page(urls[(offset + i) % len(urls)], page, loaded, stop, tally)))
        asyncio.get_running_loop().create_task(_release_when(loaded, gate))
    while tally.loaded + tally.refused + sum(tally.failed.values()) < len(pages):
        await asyncio.sleep(0.1)
    conn.send(("ready", tally.loaded, tally.refused, tally.failed))
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
    stop.set()
    for page, frames in zip(pages, await asyncio.gather(*tasks), strict=True):
        tally.read(page, frames)
    conn.send(("done", tally.__dict__))


async def _release_when(loaded: asyncio.Event, gate: asyncio.Semaphore) -> None:
    await loaded.wait()
    gate.release()


def client_process(urls: list[str], pages: list[Page], offset: int, conn: Connection) -> None:
    asyncio.run(_clients(urls, pages, offset, conn))


# --- the portal's data -----------------------------------------------------------------------------


def seed(clients: int, job_pages: float) -> tuple[list[Page], list[int]]:
    """Teams, users, jobs and one session per client; returns the clients' pages and the watched jobs."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from cluster import services as cluster_services
    from jobs import services as job_services
    from jobs.models import Job
    from portal.models import Membership, Team, TeamRole, User

    cluster_services.sync_nodes()
    members: list[tuple[User, Team]] = []
    for t in range(TEAMS):
        team = Team.objects.create(slug=f"team-{t}", name=f"Team {t}")
        for u in range(USERS_PER_TEAM):
            user = User.objects.create_user(f"member-{t}-{u}", f"member-{t}-{u}@example.org", "wsbench")
            Membership.objects.create(user=user, team=team, role=TeamRole.RESEARCHER)
            members.append((user, team))
    operator = User.objects.create_user("operator", "operator@example.org", "wsbench", is_operator=True)
    for j in range(JOBS):
        user, _ = members[j % len(members)]
        raw = {
            "name": f"train-{j}",
            "command": ["python", "train.py", "--epochs=500"],
            "gpu_model": "a100",
            "gpus_per_node": 1,
            "walltime": 36000,
        }
        job_services.submit(user, raw)
    for job_id in job_services.run_admission_cycle():
        job_services.dispatch(job_id)
    job_services.sync_jobs()
    jobs = list(Job.objects.order_by("id").values_list("id", "team__slug", "state"))
    log(f"seeded {TEAMS} teams, {len(members) + 1} users, {len(jobs)} jobs ({sum(s == 'running' for *_, s in jobs)} running)")

    def cookie(user: User) -> str:
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.save()
        return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"

    viewers: list[tuple[User, Team | None]] = [*members, (operator, None)]
    job_clients = round(clients * job_pages)
    pages: list[Page] = []
    for i in range(clients):
        user, maybe_team = viewers[i % len(viewers)]
        teams = (maybe_team.slug,) if maybe_team is not None else ()
        if i < job_clients:
            mine = [job_id for job_id, slug, _ in jobs if not teams or slug in teams]
            job_id = mine[(i // len(viewers)) % len(mine)]
            pages.append(Page(f"/ws/jobs/{job_id}/", cookie(user), job_id, teams))
        else:
            pages.append(Page("/ws/grid/", cookie(user), 0, teams))
    for i in range(OUTSIDERS):
        user, team = members[i % len(members)]
        theirs = [job_id for job_id, slug, _ in jobs if slug != team.slug]
        job_id = theirs[i % len(theirs)]
        pages.append(Page(f"/ws/jobs/{job_id}/", cookie(user), job_id, (team.slug,), outsider=True))
    watched = sorted({p.job_id for p in pages if p.job_id and not p.outsider})
    return pages, watched


def heat_message() -> dict[str, Any]:
    """What the cycle pushes to the dashboards: the heat map of the grid (here, the simulator's)."""
    from django.utils import timezone

    from cluster.simulator.telemetry import SimulatorTelemetry
    from grid.telemetry import heat

    return {
        "type": "telemetry.grid",
        "at": timezone.now().isoformat(),
        "stale": False,
        "heat": heat(SimulatorTelemetry().samples()),
    }


def publish(duration_s: int, watched: list[int]) -> tuple[int, list[float]]:
    """Once a second: the heat map to `grid`, GPU samples to each watched `job.<id>`; returns how
    many rounds and how long each round's sends took (ms)."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    base = heat_message()

    async def run() -> list[float]:
        calls: list[float] = []
        start = time.monotonic()
        for seq in range(duration_s):
            await asyncio.sleep(max(0.0, start + seq - time.monotonic()))
            t0 = time.perf_counter()
            sent = time.time()
            t = datetime.fromtimestamp(sent, tz=UTC).isoformat()
            values = {"utilization": {"node/gpu0": 97.0}, "temperature_c": {"node/gpu0": 64.0}, "bench": {"seq": seq}}
            sends = [layer.group_send("grid", {**base, "bench_seq": seq, "bench_sent": sent})]
            sends += [
                layer.group_send(f"job.{j}", {"type": "telemetry.job", "t": t, "stale": False, "values": values}) for j in watched
            ]
            await asyncio.gather(*sends)
            calls.append((time.perf_counter() - t0) * 1000)
        return calls

    return duration_s, asyncio.run(run())


# --- servers ---------------------------------------------------------------------------------------


def server_command(server: str, app: str, port: int) -> list[str]:
    if server == "daphne":
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]
    # uvicorn as docs/deployment.md runs it: no permessage-deflate (it costs CPU per frame), no lifespan (Django has none)
    return [
        sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--ws-per-message-deflate", "false", "--lifespan", "off", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


@contextlib.contextmanager
def servers(env: dict[str, str], server: str, app: str, count: int, logs: Path) -> Iterator[list[Server]]:
    """`count` server processes serving `app`, one loopback port each."""
    procs: list[tuple[subprocess.Popen[bytes], Path, str]] = []
    try:
        logs.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            port = free_port()
            log_file = logs / f"daphne-{i}.log"  # server_errors() reads daphne-*.log whatever the server
            with log_file.open("wb") as out:
                command = server_command(server, app, port)
                proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            procs.append((proc, log_file, f"http://127.0.0.1:{port}"))
        for proc, log_file, url in procs:
            wait_healthy(url, proc, log_file)
        log(f"{count} {server} process(es) serving {app}: {', '.join(url for *_, url in procs)}")
        yield [Server(url, proc.pid) for proc, _, url in procs]
    finally:
        for proc, *_ in procs:
            stop_server(proc)


# --- a scenario ------------------------------------------------------------------------------------


def scenario(
    name: str, env: dict[str, str], args: argparse.Namespace, pages: list[Page], watched: list[int], logs: Path
) -> dict[str, Any]:
    if name != "portal":
        pages = [p for p in pages if not p.outsider]  # the bare reference checks nobody
    with servers(env, args.server, SCENARIOS[name], args.servers, logs / name) as procs:
        result = _measure(name, [s.url for s in procs], args, pages, watched)
    result["server_errors"] = server_errors(logs / name)
    return result


def _measure(name: str, urls: list[str], args: argparse.Namespace, pages: list[Page], watched: list[int]) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    halves = [pages[0::2], pages[1::2]]
    pipes, procs = [], []
    started = time.perf_counter()
    try:
        for i, part in enumerate(halves):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_process, args=(urls, part, i, child), daemon=True)
            proc.start()
            pipes.append(parent)
            procs.append(proc)
        ready = [p.recv() for p in pipes]
        load_s = time.perf_counter() - started
        loaded, refused = sum(r[1] for r in ready), sum(r[2] for r in ready)
        failed: dict[str, int] = {}
        for r in ready:
            for k, v in r[3].items():
                failed[k] = failed.get(k, 0) + v
        log(f"[{name}] {loaded} pages loaded in {load_s:.1f} s, {refused} outsiders refused; failed: {failed or 'none'}")
        time.sleep(2)  # let the first frames drain
        load_before = os.getloadavg()[0]
        published, calls = publish(args.duration, watched)
        time.sleep(GRACE_S)
        for p in pipes:
            p.send("stop")
        tallies = [p.recv()[1] for p in pipes]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
    return _summarise(name, pages, args, published, calls, loaded, refused, failed, load_s, tallies, load_before)


def _summarise(
    name: str,
    pages: list[Page],
    args: argparse.Namespace,
    published: int,
    calls: list[float],
    loaded: int,
    refused: int,
    failed: dict[str, int],
    load_s: float,
    tallies: list[dict[str, Any]],
    load_before: float,
) -> dict[str, Any]:
    lags = {kind: [lag for t in tallies for lag in t["lags"][kind]] for kind in ("dashboard", "job")}
    every = lags["dashboard"] + lags["job"]
    received = sum(t["received"][k] for t in tallies for k in ("dashboard", "job"))
    # Every loaded page should hear every push: its own job's samples, or the heat map.
    expected = published * loaded
    return {
        "application": SCENARIOS[name],
        "clients": args.clients,
        "loaded": loaded,
        "load_s": round(load_s, 1),
        "failed": failed,
        "outsiders": sum(p.outsider for p in pages),
        "outsiders_refused": refused,
        "leaks": sum(t["leaks"] for t in tallies),
        "published": published,
        "expected": expected,
        "received": received,
        "lost": expected - received,
        "lag_ms": summary(every),
        "lag_ms_dashboards": summary(lags["dashboard"]),
        "lag_ms_job_pages": summary(lags["job"]),
        "publish_round_ms": summary(calls),
        "frames_received": sum(t["frames"] for t in tallies),
        "met_target": bool(every) and percentile(every, 99) <= TARGET_P99_MS and expected == received and loaded == args.clients,
        "loadavg_1m_start_end": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def summary(lags: list[float]) -> dict[str, float | None]:
    if not lags:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    return {
        "p50": round(percentile(lags, 50), 1),
        "p95": round(percentile(lags, 95), 1),
        "p99": round(percentile(lags, 99), 1),
        "max": round(max(lags), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000, help="signed-in pages (dashboards and job pages)")
    parser.add_argument("--job-pages", type=float, default=0.25, help="share of the clients on job pages")
    parser.add_argument("--duration", type=int, default=20, help="seconds of pushes (one round a second)")
    parser.add_argument("--servers", type=int, default=2, help="server processes")
    parser.add_argument("--server", choices=("uvicorn", "daphne"), default="uvicorn")
    parser.add_argument("--scenarios", default="portal,channels")
    parser.add_argument("--logs", type=Path, help="keep the servers' logs here")
    parser.add_argument("--json", action="store_true", help="print only the final JSON object")
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    names = [n for n in args.scenarios.split(",") if n]
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    began = time.perf_counter()
    results: dict[str, Any] = {}
    with data_dir() as folder, scratch_database("bench_ws") as db:
        env = portal_env(db, folder)
        env.update(REDIS_URL=REDIS_URL, TELEMETRY_PUSH="true", LOG_LEVEL="WARNING", SIM_SPEED="1")
        setup_django(env)
        _flush_redis()
        pages, watched = seed(args.clients, args.job_pages)
        logs = args.logs or folder / "logs"
        for name in names:
            results[name] = scenario(name, env, args, pages, watched, logs)
            r = results[name]
            log(f"[{name}] {r['loaded']} loaded, lag {r['lag_ms']}, lost {r['lost']} of {r['expected']}, leaks {r['leaks']}")
            _flush_redis()
        machine = machine_info(db)
    payload = {
        "benchmark": "ws_fanout",
        "command": "python bench/ws_fanout.py " + " ".join(sys.argv[1:]),
        "server": args.server,
        "servers": args.servers,
        "target_p99_ms": TARGET_P99_MS,
        "duration_s": args.duration,
        "elapsed_s": round(time.perf_counter() - began, 1),
        "scenarios": results,
        "machine": machine,
    }
    path = write_json("ws_fanout.json", payload)
    if not args.json:
        _table(results)
        log(f"wrote {path}")
    print(json.dumps(_headline(payload)))


def _flush_redis() -> None:
    """Empty the benchmark's Redis database: a scenario must not inherit the last one's groups."""
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def _headline(payload: dict[str, Any]) -> dict[str, Any]:
    results = payload["scenarios"]
    portal = results.get("portal", {})
    line: dict[str, Any] = {
        "p99_ms": portal.get("lag_ms", {}).get("p99"),
        "p50_ms": portal.get("lag_ms", {}).get("p50"),
        "lost": portal.get("lost"),
        "loaded": portal.get("loaded"),
        "clients": payload["scenarios"].get("portal", {}).get("clients"),
        "leaks": portal.get("leaks"),
        "outsiders_refused": portal.get("outsiders_refused"),
        "met_target": portal.get("met_target"),
        "server": f"{payload['server']} x{payload['servers']}",
        "elapsed_s": payload["elapsed_s"],
    }
    reference = results.get("channels")
    if reference:
        line["reference_p99_ms"] = reference["lag_ms"]["p99"]
        line["reference_lost"] = reference["lost"]
        line["reference_loaded"] = reference["loaded"]
        if line["p99_ms"] and reference["lag_ms"]["p99"]:
            line["p99_ratio_portal_to_reference"] = round(line["p99_ms"] / reference["lag_ms"]["p99"], 2)
    return line


def _table(results: dict[str, Any]) -> None:
    print(f"{'scenario':10} {'loaded':>8} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} {'lost':>7} {'leaks':>6}")
    for name, r in results.items():
        lag = r["lag_ms"]
        print(
            f"{name:10} {r['loaded']:>8} {lag['p50']!s:>8} {lag['p95']!s:>8} {lag['p99']!s:>8} {lag['max']!s:>8} {r['lost']:>7} {r['leaks']:>6}"
        )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
