"""Benchmark: single submits and arrays through POST /api/v1/jobs/, against a bare DRF endpoint in the same run.

The portal runs as deployed for plain HTTP: `grid.wsgi` under gunicorn sync workers, production
settings, a scratch PostgreSQL database and a Redis of its own (cache, Celery broker and channel
layer; no Celery worker, so every admission task a submit enqueues stays countable in Redis). The
reference (`bench/submit_reference`: token auth, a serializer with a team-membership check, one
INSERT) runs under gunicorn with the same number of sync workers on its own database on the same
PostgreSQL server. Closed-loop clients (each sends its next request when the last one answered)
measure requests/s and latency for 1 and 10 clients, portal then reference, round after round
(A B A B), so both see the same drift of the machine. Then 1,000-element arrays on the portal.

Afterwards it checks what was promised: every acknowledged job is in the database once with its
`submitted` event, nothing unacknowledged was created, and the admission tasks are in the broker.
Prints a table, writes bench/results/submit_api.json and prints a JSON object as its last line.

    .venv/bin/python bench/submit_api.py --reference --json
    .venv/bin/python bench/submit_api.py --reference --rounds 3 --duration 15 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import (
    LeanHTTP,
    LoadResult,
    data_dir,
    exit_cleanly_on_sigterm,
    gunicorn_server,
    log,
    machine_info,
    portal_env,
    portal_servers,
    scratch_database,
    setup_django,
    source_tree,
    write_json,
)
from tests.stack import OwnRedis

TEAM = "bench"
CLIENTS = (1, 10)
TARGET_RATIO = 0.8
TARGET_P95_MS_AT_10 = 100.0
TARGET_ARRAY_ELEMENTS_PER_S = 10_000
ARRAY_SIZE = 1000


def body(seq: int, array: int | None = None) -> bytes:
    job: dict[str, Any] = {
        "team": TEAM,
        "name": f"b{seq}",
        "command": ["python", "train.py", "--epochs", "3"],
        "gpu_model": "a100",
        "gpus_per_node": 1,
        "walltime": 600,
    }
    if array:
        job["array"] = f"0-{array - 1}"
    return json.dumps(job).encode()


def prepare_portal(clients: int) -> list[str]:
    """Nodes, team `bench`, one researcher and API token per client; returns the token keys."""
    from cluster import services as cluster_services
    from cluster.models import Node
    from portal.models import ApiToken, Membership, Team, TeamRole, User

    cluster_services.sync_nodes()
    if not Node.objects.filter(gpu_model="a100").exists():
        raise RuntimeError("the simulated grid has no a100 nodes (check SIM_POOLS)")
    team = Team.objects.create(slug=TEAM, name="Benchmark team")
    keys = []
    for i in range(clients):
        user = User.objects.create_user(username=f"bench-{i}", email=f"bench-{i}@grid.example", password=None)
        Membership.objects.create(user=user, team=team, role=TeamRole.RESEARCHER)
        keys.append(ApiToken.issue(user, "bench")[1])
    return keys


def prepare_reference(database_url: str, source: Path, clients: int) -> list[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "bench.submit_reference.settings"}
    env["PYTHONPATH"] = str(source)
    out = subprocess.run(
        [sys.executable, "-m", "bench.submit_reference.seed", str(clients)],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    keys: list[str] = json.loads(out.strip().splitlines()[-1])
    return keys


async def closed_loop(urls: list[str], keys: list[str], clients: int, duration_s: float, array: int | None = None) -> LoadResult:
    """`clients` clients, each with its own token (client i on urls[i % len]), for `duration_s` after three
    untimed requests each."""
    result = LoadResult(clients=clients, elapsed_s=0.0)
    expected = array or 1
    ready: list[int] = []
    gate = asyncio.Event()
    deadline = float("inf")
    seq = 0

    async def one(conn: LeanHTTP, headers: dict[str, str], timed: bool) -> None:
        nonlocal seq
        seq += 1
        raw = LeanHTTP.prepare("POST", "/api/v1/jobs/", headers, body(seq, array))
        t0 = time.perf_counter()
        try:
            status, answer = await conn.request(raw)
        except (OSError, asyncio.IncompleteReadError) as exc:
            await conn.close()
            result.errors[type(exc).__name__] = result.errors.get(type(exc).__name__, 0) + 1
            return
        elapsed = (time.perf_counter() - t0) * 1000
        if status != 201:
            key = f"HTTP {status} {answer[:120].decode(errors='replace')}"
            result.errors[key] = result.errors.get(key, 0) + 1
            return
        created = json.loads(answer)["count"] if array else 1
        result.acknowledged += created
        if timed:
            if created != expected:
                result.errors["wrong count"] = result.errors.get("wrong count", 0) + 1
                return
            result.latencies_ms.append(elapsed)
            result.units += created

    async def client(index: int) -> None:
        conn = LeanHTTP(urls[index % len(urls)])
        headers = {"Authorization": f"Token {keys[index % len(keys)]}", "Content-Type": "application/json"}
        for _ in range(3):
            await one(conn, headers, timed=False)
        ready.append(index)
        if len(ready) == clients:
            gate.set()
        await gate.wait()
        while time.perf_counter() < deadline:
            await one(conn, headers, timed=True)
        await conn.close()

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    await gate.wait()
    start = time.perf_counter()
    deadline = start + duration_s
    await asyncio.gather(*tasks)
    result.elapsed_s = time.perf_counter() - start
    return result


def count(database_url: str, sql: str) -> int:
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0


def broker_messages(redis_url: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    return sum(int(client.llen(key)) for key in client.scan_iter() if client.type(key) == b"list")


def pooled(results: list[LoadResult]) -> dict[str, Any]:
    """Requests/s per round and their median; latency percentiles over every request of every round."""
    merged = LoadResult(clients=results[0].clients, elapsed_s=sum(r.elapsed_s for r in results))
    for r in results:
        merged.latencies_ms.extend(r.latencies_ms)
        merged.units += r.units
        for key, n in r.errors.items():
            merged.errors[key] = merged.errors.get(key, 0) + n
    summary = merged.summary()
    per_round = [round(r.ok / r.elapsed_s, 1) for r in results]
    summary["requests_per_s_by_round"] = per_round
    summary["requests_per_s"] = round(statistics.median(per_round), 1)
    summary["units_per_s"] = round(statistics.median([r.units / r.elapsed_s for r in results]), 1)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", action="store_true", help="measure the bare endpoint too, A B A B (the ratio needs it)")
    parser.add_argument(
        "--json", action="store_true", help="end with the summary as one JSON line (it is always written to the file)"
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers for each server (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="A B rounds per client count (default 2)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    parser.add_argument("--array-duration", type=float, default=10.0, help="seconds of 1,000-element arrays (0: skip)")
    parser.add_argument(
        "--portal-server",
        choices=("gunicorn", "daphne"),
        default="gunicorn",
        help="the portal under gunicorn sync workers (grid.wsgi, default) or as many daphne processes (grid.asgi)",
    )
    parser.add_argument("--output", default="submit_api.json", help="file name under bench/results/")
    parser.add_argument("--working-tree", action="store_true", help="measure the checkout as is, not a copy of HEAD")
    args = parser.parse_args()
    exit_cleanly_on_sigterm()

    clients_max = max(CLIENTS)
    started = time.perf_counter()
    redis = OwnRedis(6394)
    redis.start()
    try:
        with scratch_database("bench_submit") as db_url, scratch_database("bench_submit_ref") as ref_url, data_dir() as folder:
            env = portal_env(db_url, folder)
            env["REDIS_URL"] = redis.url
            source, code = source_tree(folder, args.working_tree)
            log(f"measuring {code}")
            setup_django(env, source)
            portal_keys = prepare_portal(clients_max)
            ref_keys = prepare_reference(ref_url, source, clients_max) if args.reference else []
            machine = machine_info(db_url)
            runs: dict[tuple[str, int], list[LoadResult]] = {}
            arrays: LoadResult | None = None
            logs = folder / "logs"
            ref_env = {"DATABASE_URL": ref_url, "DJANGO_SETTINGS_MODULE": "bench.submit_reference.settings"}
            ref_env = {**{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}, **ref_env}
            with _portal(args, env, logs, source) as portal_urls:
                targets = [("portal", portal_urls, portal_keys)]
                with (
                    gunicorn_server(
                        ref_env, "bench.submit_reference.wsgi:application", args.workers, logs / "ref.log", source, "/health"
                    )
                    if args.reference
                    else _nothing()
                ) as reference:
                    if reference is not None:
                        targets.append(("reference", [reference.url], ref_keys))
                    for round_ in range(args.rounds):
                        for clients in CLIENTS:
                            for name, urls, keys in targets:
                                result = asyncio.run(closed_loop(urls, keys, clients, args.duration))
                                runs.setdefault((name, clients), []).append(result)
                                s = result.summary()
                                log(
                                    f"round {round_ + 1} {name:<9} {clients:>2} client(s): {s['requests_per_s']} req/s, "
                                    f"p50 {s['latency_ms']['p50']} ms, p95 {s['latency_ms']['p95']} ms, errors {s['errors']}"
                                )
                if args.array_duration > 0:
                    arrays = asyncio.run(closed_loop(portal_urls, portal_keys, 1, args.array_duration, ARRAY_SIZE))
                    s = arrays.summary()
                    log(f"arrays of {ARRAY_SIZE}: {s['units_per_s']} elements/s, p50 {s['latency_ms']['p50']} ms")
            acknowledged = sum(r.acknowledged for (name, _), rs in runs.items() if name == "portal" for r in rs)
            acknowledged += arrays.acknowledged if arrays else 0
            checks = {
                "portal_jobs_in_db": count(db_url, "SELECT count(*) FROM jobs_job"),
                "portal_jobs_acknowledged": acknowledged,
                "portal_submitted_events": count(db_url, "SELECT count(*) FROM jobs_jobevent WHERE to_state = 'pending'"),
                "portal_broker_messages": broker_messages(redis.url),
            }
            if args.reference:
                checks["reference_jobs_in_db"] = count(ref_url, "SELECT count(*) FROM submit_reference_job")
    finally:
        redis.stop()

    summary = summarise(runs, arrays, checks)
    payload = {
        "benchmark": "submit_api",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": ".venv/bin/python " + " ".join(sys.argv),
        "machine": machine,
        "code": code,
        "setup": {
            "servers": (
                f"portal: gunicorn grid.wsgi:application, {args.workers} sync workers"
                if args.portal_server == "gunicorn"
                else f"portal: {args.workers} daphne grid.asgi:application processes, one port each"
            )
            + f"; reference: gunicorn bench.submit_reference.wsgi:application, {args.workers} sync workers",
            "portal": "production settings, PostgreSQL scratch database, own Redis (cache, broker, channel layer), no worker",
            "reference": "own database on the same PostgreSQL server, CONN_MAX_AGE=600, DRF token auth",
            "order": f"{args.rounds} rounds of (1 client: portal, reference; 10 clients: portal, reference)",
            "duration_s": args.duration,
            "client": "bench._server.LeanHTTP in this process, one connection per client, closed loop",
        },
        "runs": {f"{name}@{clients}": pooled(rs) for (name, clients), rs in runs.items()},
        "arrays": arrays.summary() if arrays else None,
        "checks": checks,
        "wall_s": round(time.perf_counter() - started, 1),
        **summary,
    }
    path = write_json(args.output, payload)
    log(f"wrote {path}")
    for key in ("portal_per_s", "reference_per_s", "ratio", "ratio_at_1", "p95_ms_at_10", "array_elements_per_s"):
        print(f"{key:>22}: {summary.get(key)}")
    for name, met in summary["met"].items():
        print(f"{name:>22}: {'met' if met else 'MISSED'}")
    if args.json:
        print(json.dumps(summary))
    return 0 if summary["invariants_ok"] else 1


@contextlib.contextmanager
def _portal(args: argparse.Namespace, env: dict[str, str], logs: Path, source: Path) -> Iterator[list[str]]:
    if args.portal_server == "gunicorn":
        with gunicorn_server(env, "grid.wsgi:application", args.workers, logs / "portal.log", source) as server:
            yield [server.url]
    else:
        with portal_servers(env, args.workers, logs / "portal", source) as servers:
            yield [server.url for server in servers]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def summarise(runs: dict[tuple[str, int], list[LoadResult]], arrays: LoadResult | None, checks: dict[str, int]) -> dict[str, Any]:
    portal10 = pooled(runs[("portal", 10)])
    portal1 = pooled(runs[("portal", 1)])
    out: dict[str, Any] = {
        "portal_per_s": portal10["requests_per_s"],
        "portal_per_s_at_1": portal1["requests_per_s"],
        "p95_ms_at_10": portal10["latency_ms"]["p95"],
        "p95_ms_at_1": portal1["latency_ms"]["p95"],
    }
    if ("reference", 10) in runs:
        ref10, ref1 = pooled(runs[("reference", 10)]), pooled(runs[("reference", 1)])
        out["reference_per_s"] = ref10["requests_per_s"]
        out["reference_per_s_at_1"] = ref1["requests_per_s"]
        out["reference_p95_ms_at_10"] = ref10["latency_ms"]["p95"]
        # Each round's portal figure over the same round's reference, then the median: drift between rounds cancels.
        out["ratio"] = _ratio(runs[("portal", 10)], runs[("reference", 10)])
        out["ratio_at_1"] = _ratio(runs[("portal", 1)], runs[("reference", 1)])
    if arrays is not None:
        out["array_elements_per_s"] = arrays.summary()["units_per_s"]
    errors = sum(sum(r.errors.values()) for rs in runs.values() for r in rs) + (sum(arrays.errors.values()) if arrays else 0)
    out["errors"] = errors
    # Every 201 is in the database once; with no failed request nothing else is (a request that timed
    # out on the client may still have committed, so with errors the database may hold more).
    out["invariants_ok"] = (
        (
            checks["portal_jobs_in_db"] == checks["portal_jobs_acknowledged"]
            if errors == 0
            else checks["portal_jobs_in_db"] >= checks["portal_jobs_acknowledged"]
        )
        and checks["portal_submitted_events"] == checks["portal_jobs_in_db"]
        and checks["portal_broker_messages"] > 0
    )
    out["met"] = {
        "ratio >= 0.8": out.get("ratio", 0) >= TARGET_RATIO,
        "p95 at 10 <= 100 ms": out["p95_ms_at_10"] <= TARGET_P95_MS_AT_10,
        "arrays >= 10,000 elements/s": out.get("array_elements_per_s", 0) >= TARGET_ARRAY_ELEMENTS_PER_S,
    }
    return out


def _ratio(portal: list[LoadResult], reference: list[LoadResult]) -> float:
    return round(
        statistics.median((p.ok / p.elapsed_s) / (r.ok / r.elapsed_s) for p, r in zip(portal, reference, strict=True)), 3
    )


if __name__ == "__main__":
    sys.exit(main())
