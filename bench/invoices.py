"""Benchmark: drafting a month's invoices for 100 teams from 1,000,000 usage records on PostgreSQL.

Fills a scratch PostgreSQL database (created and dropped here) with 100 teams, 4 pools (on-prem
and cloud, three GPU models), rate cards with a mid-month price change, 1,000,000 jobs and one
usage record per job in the benchmarked month (INSERT ... SELECT generate_series, then VACUUM
ANALYZE). Then times `billing.services.draft_month(month)`: one GROUP BY over the month's usage
in the database, then per team one transaction writing the invoice and its lines. The first run
creates the invoices; later runs redraft them (the idempotent path the beat task takes).
It also checks the result: every invoice total equals the sum of its lines, and the grand total
equals the same figure computed independently in SQL.

    .venv/bin/python bench/invoices.py                      # 1,000,000 records, 100 teams, 5 runs
    .venv/bin/python bench/invoices.py --records 200000 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench._server import data_dir, log, portal_env, scratch_database, setup_django

TARGET_S = 2.0
MONTH = date(2025, 3, 1)
POOLS = [
    ("onprem-a100", "onprem", "a100"),
    ("onprem-h100", "onprem", "h100"),
    ("burst-a100", "cloud", "a100"),
    ("burst-a10g", "cloud", "a10g"),
]

INSERT_JOBS = """
INSERT INTO jobs_job (team_id, owner_id, name, kind, image, command, script, env, gpu_model, gpus_per_node, nodes, gpus,
    priority, walltime_s, checkpoint_dir, state, reason, reason_detail, submitted_at, state_changed_at, admitted_at,
    finished_at, pool, placement, backend, backend_job_id)
SELECT t.team_id, t.owner_id, 'job-' || g, 'custom', '', '[]'::jsonb, '', '{}'::jsonb, p.gpu_model, w.gpus, 1, w.gpus,
    'standard', 86400, '', 'succeeded', '', '', s.start, s.start + s.len, s.start, s.start + s.len, p.name, '{}'::jsonb,
    (ARRAY['simulator', 'slurm', 'kubernetes'])[1 + g %% 3], ''
FROM generate_series(1::bigint, %(records)s) AS g
CROSS JOIN LATERAL (SELECT (%(teams)s::bigint[])[1 + g %% %(n_teams)s] AS team_id, (%(owners)s::bigint[])[1 + g %% %(n_teams)s] AS owner_id) t
CROSS JOIN LATERAL (SELECT (ARRAY[1, 1, 2, 4, 8])[1 + (g / 7) %% 5] AS gpus) w
CROSS JOIN LATERAL (SELECT name, gpu_model FROM (VALUES %(pool_values)s) AS v(i, name, gpu_model) WHERE v.i = (g / 3) %% 4) p
CROSS JOIN LATERAL (SELECT %(month_start)s::timestamptz + make_interval(secs => (g * 7919) %% (30 * 86400)) AS start,
                           make_interval(secs => 60 + (g * 104729) %% 36000) AS len) s
"""

INSERT_USAGE = """
INSERT INTO billing_usagerecord (team_id, job_id, month, gpu_model, pool, pool_kind, backend, start, "end", gpus,
    gpu_seconds, used_gpu_seconds, rate_card_id, open)
SELECT j.team_id, j.id, %(month)s, j.gpu_model, j.pool, p.kind, j.backend, j.admitted_at, j.finished_at, j.gpus,
    j.gpus * EXTRACT(EPOCH FROM j.finished_at - j.admitted_at),
    CASE WHEN j.id %% 4 = 0 THEN round(j.gpus * EXTRACT(EPOCH FROM j.finished_at - j.admitted_at) * 0.6, 6) END,
    (SELECT c.id FROM billing_ratecard c WHERE c.gpu_model = j.gpu_model AND c.pool_kind = p.kind AND c.pool = ''
        AND c.valid_from <= j.admitted_at::date AND (c.valid_until IS NULL OR c.valid_until > j.admitted_at::date)),
    false
FROM jobs_job j JOIN cluster_pool p ON p.name = j.pool
"""

# The same arithmetic as the pricing core, in SQL: per group, exact seconds x rate / 3600, rounded
# half-even to the cent (PostgreSQL's round() on numeric rounds half away from zero, so the tie is
# handled explicitly), then summed.
CHECK_TOTAL = """
WITH g AS (
    SELECT u.team_id, u.gpu_model, u.pool, u.pool_kind, u.rate_card_id, SUM(u.gpu_seconds) * c.per_gpu_hour / 3600 AS exact
    FROM billing_usagerecord u JOIN billing_ratecard c ON c.id = u.rate_card_id
    WHERE u.month = %(month)s GROUP BY 1, 2, 3, 4, 5, c.per_gpu_hour
)
SELECT SUM(CASE WHEN exact * 100 - trunc(exact * 100) = 0.5 AND trunc(exact * 100)::bigint %% 2 = 0
                THEN trunc(exact * 100) / 100 ELSE round(exact, 2) END) FROM g
"""


def fill(records: int, n_teams: int) -> None:
    from django.db import connection

    from billing import services
    from cluster.models import Pool
    from portal.models import Team, User

    teams = Team.objects.bulk_create([Team(slug=f"team-{i:03d}", name=f"Team {i}") for i in range(n_teams)])
    owners = User.objects.bulk_create([User(username=f"user-{i:03d}") for i in range(n_teams)])
    Pool.objects.bulk_create([Pool(name=n, kind=k, gpu_model=m) for n, k, m in POOLS])
    for model, kind, rate in (
        ("a100", "onprem", "2.10"),
        ("h100", "onprem", "4.35"),
        ("a100", "cloud", "3.6667"),
        ("a10g", "cloud", "1.0075"),
    ):
        services.add_rate_card(gpu_model=model, pool_kind=kind, per_gpu_hour=Decimal(rate), valid_from=date(2024, 1, 1))
    services.change_rate(gpu_model="a100", pool_kind="onprem", per_gpu_hour=Decimal("2.25"), from_day=date(2025, 3, 16))
    pool_values = ", ".join(f"({i}, '{name}', '{model}')" for i, (name, _, model) in enumerate(POOLS))
    params: dict[str, Any] = {"records": records, "teams": [t.pk for t in teams], "owners": [u.pk for u in owners], "n_teams": n_teams,
              "month_start": MONTH.isoformat(), "month": MONTH}  # fmt: skip
    with connection.cursor() as cursor:
        started = time.perf_counter()
        cursor.execute(INSERT_JOBS.replace("%(pool_values)s", pool_values), params)
        cursor.execute(INSERT_USAGE, params)
        log(f"inserted {records:,} jobs and usage records in {time.perf_counter() - started:.1f} s")
    with connection.cursor() as cursor:
        connection.connection.autocommit = True
        cursor.execute("VACUUM ANALYZE billing_usagerecord")
        cursor.execute("VACUUM ANALYZE jobs_job")


def check(month: date) -> Decimal:
    from django.db import connection
    from django.db.models import Sum

    from billing.models import Invoice, InvoiceLine

    for invoice in Invoice.objects.filter(month=month):
        lines = InvoiceLine.objects.filter(invoice=invoice).aggregate(s=Sum("amount"))["s"]
        assert invoice.total == lines, f"{invoice}: total {invoice.total} != sum of lines {lines}"
    grand = Invoice.objects.filter(month=month).aggregate(s=Sum("total"))["s"]
    with connection.cursor() as cursor:
        cursor.execute(CHECK_TOTAL, {"month": month})
        expected = cursor.fetchone()[0]
    assert grand == expected, f"grand total {grand} != {expected} computed in SQL"
    return Decimal(grand)


def aggregation_plan(month: date) -> str:
    from django.db.models import Sum

    from billing.models import UsageRecord
    from billing.services.invoices import GROUP

    query = (
        UsageRecord.objects.filter(month__in=[month])
        .values(*GROUP)
        .annotate(seconds=Sum("gpu_seconds"), used=Sum("used_gpu_seconds"))
    )
    return str(query.order_by(*GROUP).explain(analyze=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--teams", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with scratch_database("bench_invoices") as url, data_dir() as folder:
        setup_django(portal_env(url, folder))
        fill(args.records, args.teams)
        from billing import services

        timings = []
        for run in range(args.runs):
            started = time.perf_counter()
            report = services.draft_month(MONTH)
            timings.append(time.perf_counter() - started)
            log(
                f"run {run + 1}: {len(report.drafted)} invoices in {timings[-1]:.3f} s ({'first draft' if run == 0 else 'redraft'})"
            )
            assert not report.failed, report.failed
        grand = check(MONTH)
        print("\nplan of the aggregation (the database does the summing):")
        print(aggregation_plan(MONTH))
        print()
        print(
            f"records={args.records:,} teams={args.teams} invoices={len(report.drafted)} grand total={grand} {services.invoices.currency()}"
        )
        print(f"first draft: {timings[0]:.3f} s; redraft median: {statistics.median(timings[1:] or timings):.3f} s; "
              f"max: {max(timings):.3f} s; target <= {TARGET_S:.1f} s: {'met' if max(timings) <= TARGET_S else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
