"""Dashboard websockets at scale: 1,000 signed-in clients, one telemetry push a second through Redis.

Run by hand: `.venv/bin/python bench/ws_fanout.py [--clients 1000] [--duration 30] [--servers 2] [--scenarios as-is,no-ticks]`.

What it does, on loopback only, cleaning up on exit (also on Ctrl-C and SIGTERM):
- a scratch PostgreSQL database with the simulated grid synced in, one user and one session for it
  (the clients send its cookie, as a browser would);
- `--servers` daphne processes (`grid.asgi:application`) with the Redis channel layer (REDIS_URL,
  database 14), as `manage.py runportal` serves websockets;
- `--clients` websocket clients on /ws/grid/ in two client processes (websockets library, asyncio),
  spread over the servers; each GridConsumer joins the `grid` group. A client counts as connected
  once its page would be loaded (the snapshot and the history charts arrived): a consumer handles
  group messages only after its connect handler has finished;
- once every client is connected, this process sends one `telemetry.grid` message a second to the
  `grid` group with channels_redis `group_send` (the telemetry cycle's call), stamped with a
  sequence number and the wall-clock time of sending; clients record the delivery lag of each.

Scenarios: `as-is` is the portal unchanged: each GridConsumer also sends its own grid snapshot every
2 s (database queries per client). `no-ticks` serves the same application with the consumers' tick
set to an hour, so only the pushed messages flow: the channel layer's fan-out alone.

Reports p50/p95/p99/max lag and loss (messages published x clients connected, minus those received
within 5 s of the last publish) per scenario; writes bench/results/ws_fanout.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

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
GRACE_S = 5.0  # how long clients keep listening after the last publish
SCENARIOS = {"as-is": "grid.asgi:application", "no-ticks": "bench.ws_fanout:quiet_application"}


def __getattr__(name: str) -> Any:
    """`quiet_application`: the portal's ASGI application with the dashboard consumer's own tick set to an hour."""
    if name != "quiet_application":
        raise AttributeError(name)
    application = importlib.import_module("grid.asgi").application  # sets Django up, so it comes first
    from grid import consumers

    consumers.TICK_S = 3600.0
    return application


# --- the clients (run in child processes) ---------------------------------------------------------


async def _client(url: str, headers: dict[str, str], opened: asyncio.Event, stop: asyncio.Event, out: dict[str, Any]) -> None:
    from websockets.asyncio.client import connect

    try:
        async with connect(url, additional_headers=headers, max_size=None, open_timeout=120, ping_interval=None) as ws:
            lags, seen = out["lags"], set()
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
                except TimeoutError:
                    continue
                received = time.time()
                assert isinstance(raw, str)  # the portal sends text frames
                if '"bench_seq"' not in raw:
                    out["other"] += 1
                    if raw.startswith('{"type": "history"'):
                        out["connected"] += 1  # the page is fully loaded: snapshot and history charts arrived
                        opened.set()
                    continue
                message = json.loads(raw)
                if message["bench_seq"] not in seen:
                    seen.add(message["bench_seq"])
                    lags.append((received - message["bench_sent"]) * 1000)
    except Exception as exc:  # noqa: BLE001 - a failed client is counted, not fatal
        out["failed"][type(exc).__name__] = out["failed"].get(type(exc).__name__, 0) + 1
        opened.set()


async def _clients(urls: list[str], cookie: str, count: int, offset: int, conn: Connection) -> None:
    out: dict[str, Any] = {"connected": 0, "other": 0, "lags": [], "failed": {}}
    stop = asyncio.Event()
    # Pages loading at once. Each load waits on the server's database thread, and daphne drops a
    # websocket not accepted within 5 s, so a rush of 1,000 would measure the rush, not the fan-out.
    gate = asyncio.Semaphore(10)
    tasks = []
    for i in range(count):
        base = urls[(offset + i) % len(urls)]
        headers = {"Cookie": cookie, "Origin": base}
        opened = asyncio.Event()
        await gate.acquire()
        task = asyncio.create_task(_client(base.replace("http://", "ws://") + "/ws/grid/", headers, opened, stop, out))
        task.add_done_callback(lambda _t: None)
        tasks.append(task)
        asyncio.get_running_loop().create_task(_release_when(opened, gate))
    while out["connected"] + sum(out["failed"].values()) < count:
        await asyncio.sleep(0.1)
    conn.send(("ready", out["connected"], out["failed"]))
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    conn.send(("done", out))


async def _release_when(opened: asyncio.Event, gate: asyncio.Semaphore) -> None:
    await opened.wait()
    gate.release()


def client_process(urls: list[str], cookie: str, count: int, offset: int, conn: Connection) -> None:
    asyncio.run(_clients(urls, cookie, count, offset, conn))


# --- the portal side -------------------------------------------------------------------------------


def seed() -> str:
    """The simulated grid, one user and a signed-in session for it; returns the Cookie header."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from cluster import services
    from portal.models import User

    services.sync_nodes()
    user = User.objects.create_user("wsbench", "wsbench@example.org", "wsbench")
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


def heat_message() -> dict[str, Any]:
    """What the cycle pushes to the dashboard: the heat map of the grid (here, the simulator's)."""
    from django.utils import timezone

    from cluster.simulator.telemetry import SimulatorTelemetry
    from grid.telemetry import heat

    return {
        "type": "telemetry.grid",
        "at": timezone.now().isoformat(),
        "stale": False,
        "heat": heat(SimulatorTelemetry().samples()),
    }


def publish(duration_s: int, base: dict[str, Any]) -> tuple[int, list[float]]:
    """One group_send to `grid` a second; returns how many and how long each call took (ms)."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()

    async def run() -> tuple[int, list[float]]:
        calls: list[float] = []
        start = time.monotonic()
        for seq in range(duration_s):
            await asyncio.sleep(max(0.0, start + seq - time.monotonic()))
            t0 = time.perf_counter()
            await layer.group_send("grid", {**base, "bench_seq": seq, "bench_sent": time.time()})
            calls.append((time.perf_counter() - t0) * 1000)
        return duration_s, calls

    return asyncio.run(run())


def summary(lags: list[float]) -> dict[str, float | None]:
    if not lags:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    return {
        "p50": round(percentile(lags, 50), 1),
        "p95": round(percentile(lags, 95), 1),
        "p99": round(percentile(lags, 99), 1),
        "max": round(max(lags), 1),
    }


@contextlib.contextmanager
def daphne(env: dict[str, str], app: str, count: int, logs: Path) -> Iterator[list[Server]]:
    """`count` daphne processes serving `app` on free loopback ports (as _server.portal_servers, any application)."""
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        logs.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            port = free_port()
            log_file = logs / f"daphne-{i}.log"
            with log_file.open("wb") as out:
                command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]
                proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            procs.append((proc, log_file))
        servers = []
        for proc, log_file in procs:
            args = cast(list[str], proc.args)  # `command` above
            port = int(args[args.index("-p") + 1])
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, proc, log_file)
            servers.append(Server(url, proc.pid))
        log(f"{count} daphne process(es) serving {app}: {', '.join(s.url for s in servers)}")
        yield servers
    finally:
        for proc, _ in procs:
            stop_server(proc)


def scenario(name: str, env: dict[str, str], args: argparse.Namespace, cookie: str, logs: Path) -> dict[str, Any]:
    with daphne(env, SCENARIOS[name], args.servers, logs / name) as servers:
        return _measure(name, servers, args, cookie, logs / name)


def _measure(name: str, servers: list[Server], args: argparse.Namespace, cookie: str, logs: Path) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    urls = [s.url for s in servers]
    halves = [args.clients // 2, args.clients - args.clients // 2]
    pipes, procs = [], []
    try:
        for i, count in enumerate(halves):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_process, args=(urls, cookie, count, i, child), daemon=True)
            proc.start()
            pipes.append(parent)
            procs.append(proc)
        t0 = time.perf_counter()
        ready = [p.recv() for p in pipes]
        connected = sum(r[1] for r in ready)
        failed: dict[str, int] = {}
        for r in ready:
            for k, v in r[2].items():
                failed[k] = failed.get(k, 0) + v
        log(f"[{name}] {connected} clients connected in {time.perf_counter() - t0:.1f} s; failed: {failed or 'none'}")
        time.sleep(2)  # let the connect-time snapshots drain
        load_before = os.getloadavg()[0]
        base = heat_message()
        published, calls = publish(args.duration, base)
        time.sleep(GRACE_S)
        for p in pipes:
            p.send("stop")
        results = [p.recv()[1] for p in pipes]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
    lags = [lag for r in results for lag in r["lags"]]
    expected = published * connected
    return {
        "application": SCENARIOS[name],
        "clients_asked": args.clients,
        "clients_connected": connected,
        "clients_failed": failed,
        "servers": len(servers),
        "published": published,
        "payload_bytes": len(json.dumps({**base, "bench_seq": 0, "bench_sent": time.time()})),
        "expected_deliveries": expected,
        "received": len(lags),
        "lost": expected - len(lags),
        "loss_pct": round(100 * (expected - len(lags)) / expected, 3) if expected else None,
        "lag_ms": summary(lags),
        "group_send_ms": summary(calls),
        "other_messages_received": sum(r["other"] for r in results),
        "met_target": bool(lags) and percentile(lags, 99) <= TARGET_P99_MS and expected == len(lags),
        "loadavg_1m_start_end": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "server_errors": server_errors(logs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=30, help="seconds of publishing (one message a second)")
    parser.add_argument("--servers", type=int, default=2, help="daphne processes")
    parser.add_argument("--scenarios", default="as-is,no-ticks")
    parser.add_argument("--logs", type=Path, help="keep the servers' logs here")
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    names = [n for n in args.scenarios.split(",") if n]
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    results: dict[str, Any] = {}
    with data_dir() as folder, scratch_database("bench_ws") as db:
        env = portal_env(db, folder)
        env.update(REDIS_URL=REDIS_URL, TELEMETRY_PUSH="true", LOG_LEVEL="WARNING")
        setup_django(env)
        cookie = seed()
        logs = args.logs or folder / "logs"
        for name in names:
            results[name] = scenario(name, env, args, cookie, logs)
            log(f"[{name}] lag {results[name]['lag_ms']}, lost {results[name]['lost']} of {results[name]['expected_deliveries']}")
        machine = machine_info(db)
    payload = {
        "benchmark": "ws_fanout",
        "command": "python bench/ws_fanout.py " + " ".join(sys.argv[1:]),
        "target_p99_ms": TARGET_P99_MS,
        "duration_s": args.duration,
        "scenarios": results,
        "machine": machine,
    }
    path = write_json("ws_fanout.json", payload)
    print(
        json.dumps(
            {n: {k: r[k] for k in ("clients_connected", "lag_ms", "lost", "loss_pct", "met_target")} for n, r in results.items()},
            indent=2,
        )
    )
    log(f"wrote {path}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
