"""Load: users submit, cancel, read and watch dashboards over HTTP and websockets while the scheduler runs.

Starts the whole portal (daphne, Celery worker with two processes, beat) on a scratch PostgreSQL
database and a Redis of its own (port 6393, never the shared one), with the demo teams and users.
For `--duration` seconds async clients on loopback submit jobs (single and small arrays), cancel
some, list and read jobs, and hold websockets to the dashboard and to job pages. A sampler checks
every half second that no team holds more GPUs of a model than its limit. Afterwards the portal
settles, then the invariants are checked in the database: every acknowledged job present exactly
once and nothing else, no job on the grid twice, no job admitted more often than it was queued,
and every drafted invoice equal to its metered usage x rate. Prints a summary and writes
bench/results/load.json.

    .venv/bin/python bench/load.py [--duration 60] [--submitters 6] [--readers 6] [--cancellers 2] [--watchers 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import websockets

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.stack import OwnRedis, Stack, portal_stack, query, scratch_database  # noqa: E402

RESULTS = REPO / "bench" / "results"
USERS = {"alice": "vision", "bob": "vision", "carol": "render", "dave": "climate", "erin": "climate"}
MODELS = {"vision": ("a100", "h100"), "render": ("a100",), "climate": ("a100", "h100")}
DEFAULT_LIMIT = 16


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))], 1)


@dataclass
class Figures:
    """What the clients saw: latencies per kind of request, websocket messages, the ledger of acknowledged jobs."""

    latency_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ledger: dict[int, str] = field(default_factory=dict)  # job id -> submitter
    unacknowledged: int = 0
    ws_messages: int = 0
    ws_connect_ms: list[float] = field(default_factory=list)
    ws_event_ms: list[float] = field(default_factory=list)  # a transition's commit to the watching socket
    over_limit: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0


async def timed(figures: Figures, kind: str, call: Awaitable[httpx.Response]) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await call
    except httpx.HTTPError:
        figures.errors[kind] += 1
        return None
    figures.latency_ms[kind].append((time.perf_counter() - started) * 1000)
    if response.status_code >= 500:
        figures.errors[kind] += 1
    return response


async def submitter(client: httpx.AsyncClient, user: str, figures: Figures, until: float, rng: random.Random) -> None:
    while time.monotonic() < until:
        team = USERS[user]
        body: dict[str, Any] = {
            "name": f"load-{user}-{rng.randrange(10**9)}", "command": ["train"], "gpu_model": rng.choice(MODELS[team]),
            "gpus_per_node": rng.choice((1, 2, 4)), "walltime": rng.choice((300, 900, 1800)),
        }  # fmt: skip
        if rng.random() < 0.25:
            body["array"] = f"0-{rng.randrange(1, 4)}"
        kind = "submit_array" if "array" in body else "submit"
        response = await timed(figures, kind, client.post("/api/v1/jobs/", json=body))
        if response is not None and response.status_code == 201:
            data = response.json()
            for job_id in data.get("ids") or [data["id"]]:
                figures.ledger[int(job_id)] = user
        else:
            figures.unacknowledged += 1
        await asyncio.sleep(rng.uniform(0.05, 0.3))


async def canceller(client: httpx.AsyncClient, user: str, figures: Figures, until: float, rng: random.Random) -> None:
    while time.monotonic() < until:
        mine = [j for j, owner in figures.ledger.items() if owner == user]
        if mine:
            job_id = rng.choice(mine)
            await timed(figures, "cancel", client.post(f"/api/v1/jobs/{job_id}/cancel/", json={"reason": "load"}))
        await asyncio.sleep(rng.uniform(0.3, 1.0))


async def reader(client: httpx.AsyncClient, figures: Figures, until: float, rng: random.Random) -> None:
    while time.monotonic() < until:
        await timed(figures, "list", client.get("/api/v1/jobs/", params={"mine": "false"}))
        if figures.ledger:
            job_id = rng.choice(list(figures.ledger))
            await timed(figures, "detail", client.get(f"/api/v1/jobs/{job_id}/"))
        await asyncio.sleep(rng.uniform(0.05, 0.2))


async def watcher(stack: Stack, session: str, path: str, figures: Figures, until: float) -> None:
    headers = {"Cookie": f"sessionid={session}", "Origin": stack.url}
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            async with websockets.connect(stack.ws_url + path, additional_headers=headers, open_timeout=10) as socket_:
                await socket_.recv()
                figures.ws_connect_ms.append((time.perf_counter() - started) * 1000)
                figures.ws_messages += 1
                while time.monotonic() < until:
                    try:
                        raw = await asyncio.wait_for(socket_.recv(), timeout=max(0.1, until - time.monotonic()))
                    except TimeoutError:
                        break
                    figures.ws_messages += 1
                    note_event_latency(json.loads(raw), figures)
        except (OSError, websockets.WebSocketException):
            figures.errors["websocket"] += 1
            await asyncio.sleep(0.5)


def note_event_latency(message: dict[str, Any], figures: Figures) -> None:
    if message.get("type") != "tick":
        return
    now = datetime.now(UTC)
    for event in message.get("events", []):
        figures.ws_event_ms.append((now - datetime.fromisoformat(event["at"])).total_seconds() * 1000)


LIMITS_SQL = """
SELECT t.slug, j.gpu_model, sum(j.gpus), coalesce(max(q."limit"), %s)
FROM jobs_job j JOIN portal_team t ON t.id = j.team_id
LEFT JOIN quotas_teamquota q ON q.team_id = j.team_id AND q.gpu_model = j.gpu_model
WHERE j.state IN ('admitted', 'dispatched', 'running', 'preempting')
GROUP BY t.slug, j.gpu_model
"""


async def sampler(db: str, figures: Figures, until: float) -> None:
    while time.monotonic() < until:
        rows = await asyncio.to_thread(query, db, LIMITS_SQL, DEFAULT_LIMIT)
        figures.samples += 1
        figures.over_limit += [{"team": t, "model": m, "held": int(h), "limit": int(lim)} for t, m, h, lim in rows if h > lim]
        await asyncio.sleep(0.5)


async def run_load(stack: Stack, db: str, creds: dict[str, dict[str, str]], args: argparse.Namespace) -> tuple[Figures, float]:
    figures, rng = Figures(), random.Random(7)
    clients = {
        u: httpx.AsyncClient(base_url=stack.url, headers={"Authorization": f"Token {c['token']}"}, timeout=30)
        for u, c in creds.items()
    }
    seed = await clients["alice"].post(
        "/api/v1/jobs/", json={"name": "watched", "command": ["x"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": 1800}
    )
    watched = int(seed.json()["id"])
    figures.ledger[watched] = "seed"
    started = time.monotonic()
    until = started + args.duration
    names = list(USERS)
    tasks = [
        submitter(clients[names[i % 5]], names[i % 5], figures, until, random.Random(rng.random()))
        for i in range(args.submitters)
    ]
    tasks += [
        canceller(clients[names[i % 5]], names[i % 5], figures, until, random.Random(rng.random()))
        for i in range(args.cancellers)
    ]
    tasks += [reader(clients[names[i % 5]], figures, until, random.Random(rng.random())) for i in range(args.readers)]
    for i in range(args.watchers):
        user = names[i % 2]  # vision's members may watch the seeded job
        path = "/ws/grid/" if i % 2 else f"/ws/jobs/{watched}/"
        tasks.append(watcher(stack, creds[user]["session"], path, figures, until))
    tasks.append(sampler(db, figures, until))
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    for client in clients.values():
        await client.aclose()
    return figures, elapsed


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
from datetime import date
from decimal import Decimal
from billing import services
from django.utils import timezone
first = timezone.now().date().replace(day=1)
for model, kind, rate in [("a100", "onprem", "2.10"), ("h100", "onprem", "3.40"), ("a10g", "cloud", "1.20"), ("a100", "cloud", "3.00"), ("h100", "cloud", "4.50")]:
    services.add_rate_card(gpu_model=model, pool_kind=kind, per_gpu_hour=Decimal(rate), valid_from=first)
"""


def check_invariants(stack: Stack, db: str, figures: Figures) -> dict[str, Any]:
    in_db = dict(query(db, "SELECT id, count(*) FROM jobs_job GROUP BY id"))
    on_grid = dict(query(db, "SELECT portal_job_id, count(*) FROM cluster_simjob GROUP BY portal_job_id"))
    admitted = dict(query(db, "SELECT job_id, count(*) FROM jobs_jobevent WHERE to_state = 'admitted' GROUP BY job_id"))
    queued = dict(
        query(db, "SELECT job_id, count(*) FROM jobs_jobevent WHERE to_state IN ('pending', 'requeued') GROUP BY job_id")
    )
    invoices = json.loads(stack.manage("shell", "-c", INVOICE_CHECK).strip().splitlines()[-1])
    checks = {
        "no team over its limit (every sample)": not figures.over_limit,
        "every acknowledged job present": set(figures.ledger) <= set(in_db),
        "no job that was not acknowledged": set(in_db) <= set(figures.ledger) or figures.unacknowledged > 0,
        "no job on the grid twice": max(on_grid.values(), default=1) == 1,
        "admitted at most once per time queued": all(n <= queued.get(j, 0) for j, n in admitted.items()),
        "invoices equal metered usage x rate": not invoices["mismatches"] and not invoices["failed"],
    }
    return {
        "checks": checks,
        "passed": sum(checks.values()),
        "of": len(checks),
        "jobs": len(in_db),
        "on_grid": len(on_grid),
        "states": dict(query(db, "SELECT state, count(*) FROM jobs_job GROUP BY state")),
        "invoices": invoices,
        "limit_samples": figures.samples,
        "over_limit": figures.over_limit[:10],
    }


def summary(figures: Figures, elapsed: float) -> dict[str, Any]:
    requests = {
        kind: {"count": len(v), "per_s": round(len(v) / elapsed, 1), "p50_ms": pct(v, 50), "p95_ms": pct(v, 95)}
        for kind, v in sorted(figures.latency_ms.items())
    }
    everything = [x for v in figures.latency_ms.values() for x in v]
    return {
        "duration_s": round(elapsed, 1),
        "requests_per_s": round(len(everything) / elapsed, 1),
        "request_p50_ms": pct(everything, 50),
        "request_p95_ms": pct(everything, 95),
        "by_kind": requests,
        "errors": dict(figures.errors),
        "ws_messages_per_s": round(figures.ws_messages / elapsed, 1),
        "ws_connect_p50_ms": pct(figures.ws_connect_ms, 50),
        "ws_connect_p95_ms": pct(figures.ws_connect_ms, 95),
        "ws_event_p50_ms": pct(figures.ws_event_ms, 50),
        "ws_event_p95_ms": pct(figures.ws_event_ms, 95),
        "jobs_acknowledged": len(figures.ledger),
        "submits_unacknowledged": figures.unacknowledged,
        "mean_request_ms": round(statistics.fmean(everything), 1) if everything else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--submitters", type=int, default=6)
    parser.add_argument("--cancellers", type=int, default=2)
    parser.add_argument("--readers", type=int, default=6)
    parser.add_argument("--watchers", type=int, default=20)
    parser.add_argument("--settle", type=float, default=15)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="portal-load-") as folder,
        OwnRedis(6393) as own,
        scratch_database(prefix="gridportal_load") as db,
        portal_stack(
            db,
            own.url,
            Path(folder),
            SIM_SPEED="120",
            DISPATCH_STALE_S="10",
            LOG_LEVEL="WARNING",
            MAX_PENDING_JOBS_PER_TEAM="10000000",
            MAX_PENDING_JOBS_PER_USER="10000000",
        ) as stack,
    ):
        stack.manage("shell", "-c", RATES)
        creds = stack.credentials(list(USERS))
        figures, elapsed = asyncio.run(run_load(stack, db, creds, args))
        time.sleep(args.settle)  # let admission, dispatch and sync catch up before counting
        invariants = check_invariants(stack, db, figures)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "clients": vars(args),
        "load": summary(figures, elapsed),
        "invariants": invariants,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))
    sys.exit(0 if invariants["passed"] == invariants["of"] else 1)


if __name__ == "__main__":
    main()
