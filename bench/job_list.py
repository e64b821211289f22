"""Benchmark: the job list API GET /api/v1/jobs/ over 1,000,000 jobs in PostgreSQL, beside a bare reference.

Fills a scratch PostgreSQL database with 1M jobs (one INSERT ... SELECT generate_series, then
VACUUM ANALYZE) over 10 teams (100k jobs each), starts the portal (daphne, grid.asgi:application)
and, beside it, a bare reference (daphne, bench/list_reference: the same keyset SQL and the same
36 keys through a minimal Django view), and times, for three personas, the first page and the
1,000th page of the keyset-paginated list (page size 50, ordering -id) on both:

- operator: sees every team's jobs (no team filter);
- member: in one team (team-00), which holds 100k jobs;
- member-3: in three teams (team-00..02), 300k jobs.

Layouts (`--layout`): `old-teams` (default) gives team-00..02 the oldest 300k ids, the other seven
teams the newer 700k, so every member's jobs sit below everyone else's; `round-robin` spreads every
team evenly over the ids; `member-oldest` gives team-00 alone the oldest 100k.

The 1,000th page is reached once per persona by following `next` 999 times; its cursor URL is
then requested repeatedly (the reference gets the same position as `?before=`). The portal's and
the reference's pages are checked to hold the same ids. Each figure comes from sequential requests
(one client) after a few untimed warm-up requests; portal and reference are measured one after
the other (A B, `--rounds` repeats: A B A B). The SQL each portal page runs is captured in-process
and timed with EXPLAIN (ANALYZE, BUFFERS). Prints a table, writes bench/results/job_list.json
(job_list-LAYOUT.json for the other layouts) and, as its last line, a JSON summary.

    .venv/bin/python bench/job_list.py
    .venv/bin/python bench/job_list.py --jobs 200000 --page 100 --requests 100     # a quicker, smaller run
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
PAGE_SIZE = 50
TARGET_P95_MS = 50
STATES = ["succeeded", "succeeded", "succeeded", "failed", "cancelled", "running", "pending", "succeeded"]
REFERENCE_APP = "bench.list_reference.asgi:application"

# How jobs are spread over the 10 teams (the SQL gives a 1-based team index for job number g).
LAYOUTS = {
    # The members' teams (team-00..02) were busy long ago: they share the oldest 30 % of the ids,
    # the other seven teams the newer 70 %. The planner's estimate (a team's rows spread evenly
    # over the ids) is wrong for every team a member is in.
    "old-teams": "CASE WHEN g <= 3 * (%(jobs)s / %(n_teams)s) THEN 1 + g %% 3 ELSE 4 + g %% (%(n_teams)s - 3) END",
    # Every team submits all the time: each team's jobs are spread evenly over the id range.
    "round-robin": "1 + g %% %(n_teams)s",
    # team-00 alone holds the oldest tenth of the ids, the other nine teams share the newer 90 %.
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


def prepare(jobs: int, layout: str) -> dict[str, Any]:
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
    log(f"inserting {jobs:,} jobs ({layout}) ...")
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
        cursor.execute("SELECT team_id, min(id), max(id) FROM jobs_job GROUP BY team_id ORDER BY team_id")
        id_ranges = {str(team): [low, high] for team, low, high in cursor.fetchall()}
    loaded = time.perf_counter() - started
    log(f"  {count:,} jobs ({size}) in {inserted:.1f}s, with VACUUM ANALYZE {loaded:.1f}s")
    return {
        "personas": personas,
        "load": {
            "jobs": count,
            "table_size": size,
            "insert_s": round(inserted, 1),
            "total_s": round(loaded, 1),
            "id_range_by_team_id": id_ranges,
        },
    }


def explain(key: str, url: str) -> dict[str, Any]:
    """The SQL the portal runs for this page (captured in-process), each jobs_job query with EXPLAIN (ANALYZE, BUFFERS)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(SERVER_NAME="127.0.0.1", HTTP_AUTHORIZATION=f"Token {key}")
    client.get(url)  # warm, as the timed requests are
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content[:300]
    queries: list[dict[str, Any]] = []
    with connection.cursor() as cursor:
        for query in captured.captured_queries:
            sql = query["sql"]
            if "jobs_job" not in sql:
                continue
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            plan = [row[0] for row in cursor.fetchall()]
            ms = next(float(line.split(":")[1].split()[0]) for line in plan if line.startswith("Execution Time"))
            queries.append({"sql": sql, "execution_ms": ms, "plan": plan})
    return {"queries": queries, "execution_ms": round(sum(q["execution_ms"] for q in queries), 3)}


def cursor_position(url: str) -> int | None:
    """The id a DRF cursor URL continues below (the `p` field of the base64 cursor)."""
    import base64

    cursor = parse_qs(urlsplit(url).query).get("cursor", [None])[0]
    if cursor is None:
        return None
    decoded = parse_qs(base64.b64decode(cursor.encode()).decode())
    return int(decoded["p"][0]) if "p" in decoded else None


async def walk_to_page(base_url: str, key: str, page: int) -> tuple[str, float]:
    """Follow `next` from the first page to page `page`; returns its URL and the seconds taken."""
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Token {key}"}, timeout=30) as client:
        url = "/api/v1/jobs/"
        started = time.perf_counter()
        for _ in range(page - 1):
            r = await client.get(url)
            r.raise_for_status()
            url = r.json()["next"]
            if not url:
                raise RuntimeError(f"the list ended before page {page}")
        return url, time.perf_counter() - started


def page_ids(base_url: str, key: str, url: str) -> list[int]:
    r = httpx.get(base_url + url if url.startswith("/") else url, headers={"Authorization": f"Token {key}"}, timeout=30)
    return [row["id"] for row in expect(r, 200)["results"]]


async def time_page(base_url: str, key: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    async def get(client: httpx.AsyncClient, index: int) -> int:
        r = await client.get(url)
        rows = len(expect(r, 200)["results"])
        assert rows == PAGE_SIZE, f"{rows} rows on the page"
        return rows

    headers = [{"Authorization": f"Token {key}"}]
    result = await closed_loop(
        [base_url], headers, args.clients, get, duration_s=args.duration, max_requests=args.requests, warmup_requests=5
    )
    return result.summary()


def measure(server: Any, key: str, url: str, args: argparse.Namespace, db_url: str) -> dict[str, Any]:
    with Observer(db_url, [server.pid]) as observed:
        summary = asyncio.run(time_page(server.url, key, url, args))
    report: dict[str, Any] = observed.report
    summary["observed"] = report
    summary["server_cpu_ms_per_request"] = round(1000 * report["cpu_s_servers"] / max(1, summary["requests_ok"]), 2)
    return summary


def measure_persona(
    name: str, persona: dict[str, Any], portal: Any, reference: Any, args: argparse.Namespace, db_url: str
) -> list[dict[str, Any]]:
    """First and deep page of one persona on the portal and the reference, A B per round."""
    log(f"{name}: walking to page {args.page} ...")
    deep_url, walk_s = asyncio.run(walk_to_page(portal.url, persona["key"], args.page))
    log(f"  {args.page - 1} pages followed in {walk_s:.1f}s ({1000 * walk_s / (args.page - 1):.1f} ms/page)")
    pages = [("first", "/api/v1/jobs/", "/jobs/"), (f"page-{args.page}", deep_url, f"/jobs/?before={cursor_position(deep_url)}")]
    rows = []
    for label, url, reference_url in pages:
        ids = page_ids(portal.url, persona["key"], url)
        same = ids == page_ids(reference.url, persona["key"], reference_url)
        if not same:
            log(f"  {label}: the portal's and the reference's pages differ")
        rounds: list[dict[str, Any]] = []
        for _ in range(args.rounds):
            rounds.append({"portal": measure(portal, persona["key"], url, args, db_url)})
            rounds[-1]["reference"] = measure(reference, persona["key"], reference_url, args, db_url)
        headline = max(rounds, key=lambda r: r["portal"]["latency_ms"]["p95"])
        row = {
            "persona": name,
            "page": label,
            "teams": persona["teams"],
            "visible_jobs": persona["visible_jobs"],
            "url": url,
            "reference_url": reference_url,
            "first_id_on_page": ids[0],
            "same_ids_as_reference": same,
            "latency_ms": headline["portal"]["latency_ms"],
            "reference_latency_ms": headline["reference"]["latency_ms"],
            "server_cpu_ms_per_request": headline["portal"]["server_cpu_ms_per_request"],
            "reference_cpu_ms_per_request": headline["reference"]["server_cpu_ms_per_request"],
            "rounds": rounds,
            "explain": explain(persona["key"], url),
        }
        if label != "first":
            row["walk"] = {"pages": args.page - 1, "seconds": round(walk_s, 2)}
        rows.append(row)
        lat, ref = row["latency_ms"], row["reference_latency_ms"]
        log(f"  {label}: p50 {lat['p50']} ms, p95 {lat['p95']} ms (reference p50 {ref['p50']}, p95 {ref['p95']})")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs to insert (default 1,000,000)")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per page and persona (default 300)")
    parser.add_argument("--duration", type=float, default=20.0, help="at most this many seconds per measurement")
    parser.add_argument("--clients", type=int, default=1, help="concurrent clients per measurement (default 1)")
    parser.add_argument("--page", type=int, default=PAGE, help=f"the deep page to time (default {PAGE})")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="portal-then-reference rounds per page (default 1; the worst portal p95 is reported)",
    )
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="old-teams", help="how jobs are spread over teams")
    parser.add_argument("--output", help="file name under bench/results/ (default job_list.json, or job_list-LAYOUT.json)")
    parser.add_argument("--working-tree", action="store_true", help="measure the checkout as is, not a copy of HEAD")
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    if args.jobs // TEAMS < args.page * PAGE_SIZE:
        parser.error(
            f"--jobs must be at least {args.page * PAGE_SIZE * TEAMS} for page {args.page} to exist for a one-team member"
        )

    rows: list[dict[str, Any]] = []
    with scratch_database("bench_joblist") as db_url, data_dir() as folder:
        env = portal_env(db_url, folder)
        source, code = source_tree(folder, args.working_tree)
        log(f"measuring {code}")
        setup_django(env, source)
        machine = machine_info(db_url)
        prepared = prepare(args.jobs, args.layout)
        sessions_before = database_sessions(db_url)
        reference_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.list_reference.settings"}
        with (
            portal_servers(env, 1, folder / "logs", source) as portals,
            portal_servers(reference_env, 1, folder / "reference-logs", source, app=REFERENCE_APP) as references,
        ):
            for name, persona in prepared["personas"].items():
                rows += measure_persona(name, persona, portals[0], references[0], args, db_url)
        sessions = database_sessions(db_url) - sessions_before - 1
        errors = server_errors(folder / "logs")
        reference_errors = server_errors(folder / "reference-logs")
    targets = {
        f"{r['persona']}/{r['page']}": {
            "target_p95_ms": f"<= {TARGET_P95_MS}",
            "measured_p95_ms": r["latency_ms"]["p95"],
            "met": r["latency_ms"]["p95"] <= TARGET_P95_MS,
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
            "servers": "one daphne process each: the portal (grid.asgi:application) and the reference (" + REFERENCE_APP + ")",
            "reference": "the same keyset SQL (per-team arms for members) and the same 36 keys through one Django view: "
            "no middleware, no DRF, no ORM, the token looked up by one query",
            "clients": args.clients,
            "client": "httpx.AsyncClient, keep-alive, sequential requests per client, same process",
            "requests_per_measurement": args.requests,
            "max_duration_s": args.duration,
            "rounds": args.rounds,
            "page_size": PAGE_SIZE,
            "teams": TEAMS,
            "layout": args.layout,
            "load": prepared["load"],
            "db_sessions_opened": sessions,
            "server_errors": errors,
            "reference_server_errors": reference_errors,
        },
        "measurements": rows,
        "targets": targets,
    }
    output = args.output or ("job_list.json" if args.layout == "old-teams" else f"job_list-{args.layout}.json")
    path = write_json(output, payload)
    print_table(rows)
    log(f"wrote {path}")
    print(json.dumps(summary(payload)))
    return 0


def summary(payload: dict[str, Any]) -> dict[str, Any]:
    """The last line: per persona and page, the portal's and the reference's p50/p95 and their ratio."""
    personas: dict[str, dict[str, Any]] = {}
    for r in payload["measurements"]:
        lat, ref = r["latency_ms"], r["reference_latency_ms"]
        personas.setdefault(r["persona"], {})[r["page"]] = {
            "p50_ms": lat["p50"],
            "p95_ms": lat["p95"],
            "reference_p50_ms": ref["p50"],
            "reference_p95_ms": ref["p95"],
            "p50_ratio": round(lat["p50"] / ref["p50"], 2),
            "sql_ms": r["explain"]["execution_ms"],
            "cpu_ms_per_request": r["server_cpu_ms_per_request"],
            "same_ids_as_reference": r["same_ids_as_reference"],
        }
    return {
        "benchmark": "job_list",
        "layout": payload["setup"]["layout"],
        "jobs": payload["setup"]["load"]["jobs"],
        "target_p95_ms": TARGET_P95_MS,
        "all_met": all(t["met"] for t in payload["targets"].values()),
        "personas": personas,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'persona':<9} {'page':<10} {'visible':>9} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'SQL ms':>7} "
        f"{'CPU ms':>7} {'ref p50':>7} {'ref p95':>7} {'ratio':>6} {'target':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        lat, ref = r["latency_ms"], r["reference_latency_ms"]
        met = lat["p95"] <= TARGET_P95_MS
        print(
            f"{r['persona']:<9} {r['page']:<10} {r['visible_jobs']:>9} {lat['p50']:>7} {lat['p95']:>7} {lat['p99']:>7} "
            f"{r['explain']['execution_ms']:>7} {r['server_cpu_ms_per_request']:>7} {ref['p50']:>7} {ref['p95']:>7} "
            f"{lat['p50'] / ref['p50']:>6.2f} {'met' if met else 'MISSED':>7}"
        )


if __name__ == "__main__":
    sys.exit(main())
