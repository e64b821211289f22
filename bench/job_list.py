"""Benchmark: the job list API GET /api/v1/jobs/ over 1,000,000 jobs in PostgreSQL.

Fills a scratch PostgreSQL database with 1M jobs (one INSERT ... SELECT generate_series, then
VACUUM ANALYZE) spread round-robin over 10 teams (100k jobs each), starts the portal (daphne,
grid.asgi:application) and times, for three personas, the first page and the 1,000th page of
the keyset-paginated list (page size 50, ordering -id):

- operator: sees every team's jobs (no team filter);
- member: in one team, which holds 100k jobs (team_id IN (one id));
- member-3: in three teams (team_id IN (three ids), 300k jobs).

The 1,000th page is reached once per persona by following `next` 999 times; its cursor URL is
then requested repeatedly. Each figure comes from sequential requests (one client) after a few
untimed warm-up requests. The plan and timing of the SQL behind each page are recorded with
EXPLAIN (ANALYZE, BUFFERS). Prints a table and writes bench/results/job_list.json.

    .venv/bin/python bench/job_list.py
    .venv/bin/python bench/job_list.py --jobs 200000 --requests 100     # a quicker, smaller run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

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

TEAMS = 10
PAGE = 1000  # the deep page timed by default
TARGET_P95_MS = 50
STATES = ["succeeded", "succeeded", "succeeded", "failed", "cancelled", "running", "pending", "succeeded"]

# How jobs are spread over the 10 teams (the SQL gives a 1-based team index for job number g).
LAYOUTS = {
    # Every team submits all the time: each team's jobs are spread evenly over the id range.
    "round-robin": "1 + g %% %(n_teams)s",
    # The member's team (team-00) was busy long ago: it holds the oldest tenth of the ids, the
    # other nine teams share the newer 90% round-robin. The planner's estimate (10 % of rows
    # match, spread evenly) is then wrong for the member's team.
    "member-oldest": "CASE WHEN g <= %(jobs)s / %(n_teams)s THEN 1 ELSE 2 + g %% (%(n_teams)s - 1) END",
}

# Every NOT NULL column of jobs_job without a database default must be listed here; if a later
# migration adds one, the INSERT fails and names it.
INSERT_JOBS = """
INSERT INTO jobs_job (
    team_id, owner_id, name, kind, image, command, script, env, gpu_model, gpus_per_node, nodes, gpus,
    priority, walltime_s, checkpoint_dir, state, reason, reason_detail, submitted_at, state_changed_at,
    finished_at, exit_code, pool, placement, backend, backend_job_id
)
SELECT
    (%(teams)s::bigint[])[{team_index}],
    (%(owners)s::bigint[])[{team_index}],
    'job-' || g,
    'custom', 'python:3.11', '["python", "train.py"]'::jsonb, '', '{}'::jsonb, 'a100', 1, 1, 1,
    'standard', 3600, '',
    (%(states)s::text[])[1 + (g / 7) %% %(n_states)s],
    '', '',
    now() - make_interval(secs => %(jobs)s - g),
    now() - make_interval(secs => %(jobs)s - g),
    NULL, NULL, '', '{}'::jsonb, 'simulator', ''
FROM generate_series(1, %(jobs)s) AS g
"""


def prepare(jobs: int, layout: str = "round-robin") -> dict[str, Any]:
    """Teams, users, tokens and `jobs` jobs; returns persona name -> token key and team ids."""
    from django.db import connection

    from portal.models import ApiToken, Membership, Team, TeamRole, User

    teams = [Team.objects.create(slug=f"team-{i:02d}", name=f"Team {i}") for i in range(TEAMS)]
    owners = []
    for i, team in enumerate(teams):
        user = User.objects.create_user(username=f"owner-{i:02d}", password=None)
        Membership.objects.create(user=user, team=team, role=TeamRole.RESEARCHER)
        owners.append(user)
    operator = User.objects.create_user(username="bench-operator", password=None, is_operator=True)
    member3 = User.objects.create_user(username="bench-member3", password=None)
    for team in teams[:3]:
        Membership.objects.create(user=member3, team=team)
    personas = {
        "operator": {"key": ApiToken.issue(operator, "bench")[1], "teams": "all", "visible_jobs": jobs},
        "member": {"key": ApiToken.issue(owners[0], "bench")[1], "teams": [teams[0].pk], "visible_jobs": jobs // TEAMS},
        "member-3": {
            "key": ApiToken.issue(member3, "bench")[1],
            "teams": [t.pk for t in teams[:3]],
            "visible_jobs": 3 * jobs // TEAMS,
        },
    }
    log(f"inserting {jobs:,} jobs ...")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        cursor.execute(
            INSERT_JOBS.replace("{team_index}", LAYOUTS[layout]),
            {
                "teams": [t.pk for t in teams],
                "owners": [u.pk for u in owners],
                "n_teams": TEAMS,
                "states": STATES,
                "n_states": len(STATES),
                "jobs": jobs,
            },
        )
        inserted = time.perf_counter() - started
        cursor.execute("SET synchronous_commit = on")
        cursor.execute("VACUUM (ANALYZE) jobs_job")
        cursor.execute("SELECT count(*), pg_size_pretty(pg_total_relation_size('jobs_job')) FROM jobs_job")
        count, size = cursor.fetchone()
    loaded = time.perf_counter() - started
    log(f"  {count:,} jobs ({size}) in {inserted:.1f}s, with VACUUM ANALYZE {loaded:.1f}s")
    return {
        "personas": personas,
        "load": {"jobs": count, "table_size": size, "insert_s": round(inserted, 1), "total_s": round(loaded, 1)},
    }


def explain(persona: dict[str, Any], before_id: int | None) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the query the list view runs for this persona and page."""
    from django.db import connection

    from jobs.models import Job

    jobs = Job.objects.select_related("team", "owner", "template").order_by("-id")
    if persona["teams"] != "all":
        jobs = jobs.filter(team_id__in=persona["teams"])
    if before_id is not None:
        jobs = jobs.filter(id__lt=before_id)
    sql, params = jobs[:51].query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        plan = [row[0] for row in cursor.fetchall()]
    return {"sql": sql % tuple(repr(p) for p in params), "plan": plan}


def cursor_position(url: str) -> int | None:
    """The id a DRF cursor URL continues below (the `p` field of the base64 cursor)."""
    import base64

    cursor = parse_qs(urlsplit(url).query).get("cursor", [None])[0]
    if cursor is None:
        return None
    decoded = parse_qs(base64.b64decode(cursor.encode()).decode())
    return int(decoded["p"][0]) if "p" in decoded else None


async def walk_to_page(base_url: str, key: str, page: int) -> tuple[str, float, int]:
    """Follow `next` from the first page to page `page`; returns its URL, seconds taken, first id on it."""
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Token {key}"}, timeout=30) as client:
        url = "/api/v1/jobs/"
        started = time.perf_counter()
        for _ in range(page - 1):
            r = await client.get(url)
            r.raise_for_status()
            url = r.json()["next"]
            if not url:
                raise RuntimeError(f"the list ended before page {page}")
        elapsed = time.perf_counter() - started
        r = await client.get(url)
        r.raise_for_status()
        return url, elapsed, r.json()["results"][0]["id"]


async def time_page(base_url: str, key: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    async def get(client: httpx.AsyncClient, index: int) -> int:
        r = await client.get(url)
        rows = len(expect(r, 200)["results"])
        assert rows == 50, f"{rows} rows on the page"
        return rows

    headers = [{"Authorization": f"Token {key}"}]
    result = await closed_loop(
        [base_url], headers, args.clients, get, duration_s=args.duration, max_requests=args.requests, warmup_requests=5
    )
    return result.summary()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs to insert (default 1,000,000)")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per page and persona (default 300)")
    parser.add_argument("--duration", type=float, default=20.0, help="at most this many seconds per measurement")
    parser.add_argument("--clients", type=int, default=1, help="concurrent clients per measurement (default 1)")
    parser.add_argument("--page", type=int, default=PAGE, help=f"the deep page to time (default {PAGE})")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="round-robin", help="how jobs are spread over teams")
    parser.add_argument("--output", help="file name under bench/results/ (default job_list.json, or job_list-LAYOUT.json)")
    parser.add_argument("--working-tree", action="store_true", help="measure the checkout as is, not a copy of HEAD")
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    if args.jobs // TEAMS < args.page * 50:
        parser.error(f"--jobs must be at least {args.page * 50 * TEAMS} for page {args.page} to exist for a one-team member")

    rows: list[dict[str, Any]] = []
    with scratch_database("bench_joblist") as db_url, data_dir() as folder:
        env = portal_env(db_url, folder)
        source, code = source_tree(folder, args.working_tree)
        log(f"measuring {code}")
        setup_django(env, source)
        machine = machine_info(db_url)
        prepared = prepare(args.jobs, args.layout)
        sessions_before = database_sessions(db_url)
        requests = 0
        with portal_servers(env, 1, folder / "logs", source) as servers:
            server = servers[0]
            for name, persona in prepared["personas"].items():
                log(f"{name}: walking to page {args.page} ...")
                page_url, walk_s, first_id = asyncio.run(walk_to_page(server.url, persona["key"], args.page))
                requests += args.page
                log(f"  {args.page - 1} pages followed in {walk_s:.1f}s ({1000 * walk_s / (args.page - 1):.1f} ms/page)")
                for label, url in (("first", "/api/v1/jobs/"), (f"page-{args.page}", page_url)):
                    with Observer(db_url, [server.pid]) as observed:
                        summary = asyncio.run(time_page(server.url, persona["key"], url, args))
                    summary.update(
                        persona=name,
                        page=label,
                        teams=persona["teams"],
                        visible_jobs=persona["visible_jobs"],
                        url=url,
                        observed=observed.report,
                        explain=explain(persona, cursor_position(url)),
                    )
                    if label != "first":
                        summary["walk"] = {"pages": args.page - 1, "seconds": round(walk_s, 2), "first_id_on_page": first_id}
                    rows.append(summary)
                    requests += summary["requests_ok"] + sum(summary["errors"].values()) + 5 * args.clients
                    lat = summary["latency_ms"]
                    log(f"  {label}: p50 {lat['p50']} ms, p95 {lat['p95']} ms, {summary['requests_per_s']} req/s")

        sessions = database_sessions(db_url) - sessions_before - 1
        errors = server_errors(folder / "logs")
    prepared["load"]["note"] = "jobs inserted in one INSERT ... SELECT generate_series, then VACUUM (ANALYZE)"
    targets = {
        f"{r['persona']}/{r['page']}": {
            "target_p95_ms": f"< {TARGET_P95_MS}",
            "measured_p95_ms": r["latency_ms"]["p95"],
            "met": r["latency_ms"]["p95"] < TARGET_P95_MS,
        }
        for r in rows
    }
    payload = {
        "benchmark": "job_list",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": ".venv/bin/python " + " ".join(sys.argv),
        "machine": machine,
        "code": code,
        "setup": {
            "servers": 1,
            "server": "daphne grid.asgi:application (one process)",
            "clients": args.clients,
            "client": "httpx.AsyncClient, keep-alive, sequential requests per client, same process",
            "requests_per_measurement": args.requests,
            "max_duration_s": args.duration,
            "page_size": 50,
            "teams": TEAMS,
            "layout": args.layout,
            "load": prepared["load"],
            "db_sessions_opened": sessions,
            "http_requests": requests,
            "db_sessions_per_request": round(sessions / max(1, requests), 2),
            "server_errors": errors,
        },
        "measurements": rows,
        "targets": targets,
    }
    output = args.output or ("job_list.json" if args.layout == "round-robin" else f"job_list-{args.layout}.json")
    path = write_json(output, payload)
    print_table(rows, targets)
    log(f"wrote {path}")
    return 0


def print_table(rows: list[dict[str, Any]], targets: dict[str, Any]) -> None:
    header = f"{'persona':<9} {'page':<9} {'visible':>9} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'SQL ms':>8} {'target':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        lat = r["latency_ms"]
        sql_ms = next(
            (line.split(":")[1].strip().split()[0] for line in r["explain"]["plan"] if line.startswith("Execution Time")), "?"
        )
        met = targets[f"{r['persona']}/{r['page']}"]["met"]
        print(
            f"{r['persona']:<9} {r['page']:<9} {r['visible_jobs']:>9} {r['requests_ok']:>8} {lat['p50']:>8} {lat['p95']:>8} "
            f"{lat['p99']:>8} {sql_ms:>8} {'met' if met else 'MISSED':>7}"
        )


if __name__ == "__main__":
    sys.exit(main())
