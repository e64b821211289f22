"""Benchmark: job submission through POST /api/v1/jobs/ on PostgreSQL, with token auth.

Starts the portal (daphne, grid.asgi:application) against a scratch PostgreSQL database with
no Celery worker and no Redis, so each submission enqueues its admission task to the file broker
and nothing else competes for the CPU. Measures, per scenario, sustained successful requests/s,
job elements/s and p50/p95 latency with closed-loop clients (each sends its next request when the
previous one answered). Prints a table and writes bench/results/submit_api.json.

    .venv/bin/python bench/submit_api.py                 # all scenarios, 2 daphne processes
    .venv/bin/python bench/submit_api.py --servers 1 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench._server import (
    Observer,
    closed_loop,
    data_dir,
    database_sessions,
    exit_cleanly_on_sigterm,
    expect,
    log,
    machine_info,
    portal_env,
    portal_servers,
    scratch_database,
    server_errors,
    setup_django,
    source_tree,
    write_json,
)

TEAM = "bench"
# (name, array size or None for a single job, concurrent clients)
SCENARIOS = [
    ("single", None, 1),
    ("single", None, 10),
    ("single", None, 50),
    ("array-100", 100, 1),
    ("array-100", 100, 10),
    ("array-1000", 1000, 1),
]
TARGET_ELEMENTS_PER_S = 500
TARGET_SINGLE_P95_MS_AT_10 = 100


def body(array: int | None, seq: int) -> dict[str, Any]:
    job: dict[str, Any] = {
        "team": TEAM,
        "name": f"b{seq}",
        "command": ["python", "x.py"],
        "gpu_model": "a100",
        "gpus_per_node": 1,
        "walltime": 600,
    }
    if array:
        job["array"] = f"0-{array - 1}"
    return job


def prepare(clients: int) -> list[str]:
    """Nodes, a team, one member and one API token per client slot; returns the token keys."""
    from cluster import services as cluster_services
    from cluster.models import Node
    from portal.models import ApiToken, Membership, Team, TeamRole, User

    cluster_services.sync_nodes()
    if not Node.objects.filter(gpu_model="a100").exists():
        raise RuntimeError("the simulated grid has no a100 nodes (check SIM_POOLS)")
    team = Team.objects.create(slug=TEAM, name="Benchmark team")
    user = User.objects.create_user(username="bench-submitter", email="bench@grid.example", password=None)
    Membership.objects.create(user=user, team=team, role=TeamRole.RESEARCHER)
    return [ApiToken.issue(user, f"bench-{i}")[1] for i in range(clients)]


def jobs_in_db() -> int:
    from jobs.models import Job

    return Job.objects.count()


async def run_scenario(
    urls: list[str], keys: list[str], array: int | None, clients: int, args: argparse.Namespace
) -> dict[str, Any]:
    expected = array or 1
    seq = 0

    async def submit(client: httpx.AsyncClient, index: int) -> int:
        nonlocal seq
        seq += 1
        r = await client.post("/api/v1/jobs/", json=body(array, seq))
        data = expect(r, 201)
        created = data["count"] if array else 1
        assert created == expected, f"created {created}, expected {expected}"
        return created

    headers = [{"Authorization": f"Token {key}"} for key in keys]
    result = await closed_loop(
        urls, headers, clients, submit, duration_s=args.duration, max_requests=args.max_requests, warmup_requests=2
    )
    return result.summary()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=2, help="daphne processes; clients are spread over them (default 2)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per scenario (default 15)")
    parser.add_argument("--max-requests", type=int, default=20000, help="cap on timed requests per scenario")
    parser.add_argument("--output", default="submit_api.json", help="file name under bench/results/")
    parser.add_argument("--logs", help="keep the servers' logs in this folder (default: a temporary folder)")
    parser.add_argument("--only", help="comma-separated scenario@clients to run, e.g. single@10,array-100@1")
    parser.add_argument("--working-tree", action="store_true", help="measure the checkout as is, not a copy of HEAD")
    args = parser.parse_args()
    exit_cleanly_on_sigterm()

    scenarios = SCENARIOS
    if args.only:
        wanted = set(args.only.split(","))
        scenarios = [s for s in SCENARIOS if f"{s[0]}@{s[2]}" in wanted]
    max_clients = max(c for _, _, c in scenarios)
    rows: list[dict[str, Any]] = []
    with scratch_database("bench_submit") as db_url, data_dir() as folder:
        env = portal_env(db_url, folder)
        source, code = source_tree(folder, args.working_tree)
        log(f"measuring {code}")
        setup_django(env, source)
        keys = prepare(max_clients)
        machine = machine_info(db_url)
        logs = Path(args.logs).resolve() if args.logs else folder / "logs"
        for name, array, clients in scenarios:
            before = jobs_in_db()
            # Fresh servers for every scenario, so one scenario's leftovers (open database
            # connections, a backlog) do not spill into the next one's figures.
            scenario_logs = logs / f"{name}-{clients}"
            sessions_before = database_sessions(db_url)
            with portal_servers(env, args.servers, scenario_logs, source) as servers:
                urls = [s.url for s in servers]
                log(f"scenario {name} with {clients} client(s) for {args.duration:.0f}s ...")
                started = time.perf_counter()
                with Observer(db_url, [s.pid for s in servers]) as observed:
                    summary = asyncio.run(run_scenario(urls, keys[:clients], array, clients, args))
            # Includes this count's own connection and the servers' /healthz checks (a few).
            sessions = database_sessions(db_url) - sessions_before - 1
            # Each client's untimed warm-up requests also created jobs.
            created = jobs_in_db() - before
            warmup = 2 * clients
            attempts = summary["requests_ok"] + sum(summary["errors"].values()) + warmup
            summary.update(
                scenario=name,
                array_size=array,
                jobs_created_in_db=created,
                jobs_expected_in_db=summary["units"] + warmup * (array or 1),
                wall_s=round(time.perf_counter() - started, 1),
                observed=observed.report,
                db_sessions_opened=sessions,
                db_sessions_per_request=round(sessions / attempts, 2),
                server_errors=server_errors(scenario_logs),
            )
            rows.append(summary)
            log(
                f"  {summary['requests_per_s']} req/s, {summary['units_per_s']} jobs/s, "
                f"p50 {summary['latency_ms']['p50']} ms, p95 {summary['latency_ms']['p95']} ms, errors {summary['errors']}, "
                f"db sessions/request {summary['db_sessions_per_request']}, observed {observed.report}"
            )
        broker_files = sum(1 for _ in (folder / "broker").iterdir())
        total_jobs = jobs_in_db()

    single_10 = next((r for r in rows if r["scenario"] == "single" and r["clients"] == 10), None)
    array_rows = [r for r in rows if r["array_size"]]
    targets: dict[str, Any] = {}
    if array_rows:
        best_elements = max(r["units_per_s"] or 0 for r in array_rows)
        targets["array_elements_per_s"] = {
            "target": f">= {TARGET_ELEMENTS_PER_S}",
            "measured_best": best_elements,
            "measured": {f"{r['scenario']}@{r['clients']}": r["units_per_s"] for r in array_rows},
            "met": best_elements >= TARGET_ELEMENTS_PER_S,
        }
    if single_10:
        targets["single_p95_ms_at_10_clients"] = {
            "target": f"< {TARGET_SINGLE_P95_MS_AT_10}",
            "measured": single_10["latency_ms"]["p95"],
            "met": single_10["latency_ms"]["p95"] < TARGET_SINGLE_P95_MS_AT_10,
        }
    payload = {
        "benchmark": "submit_api",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": ".venv/bin/python " + " ".join(sys.argv),
        "machine": machine,
        "code": code,
        "setup": {
            "servers": args.servers,
            "server": "daphne grid.asgi:application, one process per port; client i uses server i % servers",
            "database": "PostgreSQL scratch database, CONN_MAX_AGE=60",
            "celery": "no worker, CELERY_TASK_ALWAYS_EAGER=false, file broker (each submit enqueues one admission task)",
            "duration_s": args.duration,
            "max_requests": args.max_requests,
            "client": "httpx.AsyncClient, one keep-alive connection per client, closed loop, same process",
            "broker_messages_after_run": broker_files,
            "jobs_in_db_after_run": total_jobs,
        },
        "scenarios": rows,
        "targets": targets,
    }
    path = write_json(args.output, payload)
    print_table(rows, targets)
    log(f"wrote {path}")
    return 0


def print_table(rows: list[dict[str, Any]], targets: dict[str, Any]) -> None:
    header = f"{'scenario':<11} {'clients':>7} {'requests':>8} {'req/s':>8} {'jobs/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        lat = r["latency_ms"]
        print(
            f"{r['scenario']:<11} {r['clients']:>7} {r['requests_ok']:>8} {r['requests_per_s']:>8} {r['units_per_s']:>8} "
            f"{lat['p50']:>8} {lat['p95']:>8} {lat['p99']:>8} {sum(r['errors'].values()):>6}"
        )
    for name, t in targets.items():
        measured = t.get("measured_best", t.get("measured"))
        print(f"target {name}: {t['target']}, measured {measured} -> {'met' if t['met'] else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(main())
