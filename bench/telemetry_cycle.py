"""One telemetry cycle for 1,000 nodes x 8 GPUs, read from a real Prometheus.

Run by hand: `.venv/bin/python bench/telemetry_cycle.py [--nodes N] [--cycles N] [--scrape-interval 2s] [--json]`.

What it builds, all on loopback and removed at the end (also on Ctrl-C and SIGTERM):
- a scratch PostgreSQL database with the simulator's grid (SIM_POOLS: two pools, N nodes of 8 GPUs),
  the portal's Node rows synced from it, and ~90% of the GPUs held by running jobs (1-8 GPUs each);
- one dcgm-exporter text per node (7 metrics x 8 GPUs, dcgm-exporter's labels, `hpc_job` naming the
  portal job), served at `/sim/nodes/<node>/metrics` by a small HTTP server in a process of its own
  (real exporters run on the nodes, not in the portal's process), a few GPUs hot and one with an
  XID so the guard has something to decide;
- a scratch Prometheus started by `scripts/prometheus-dev` with one target per node (N targets) and
  the recording rules of monitoring/prometheus-rules.yml;
- the Redis channel layer and cache (REDIS_URL, database 14), with a listening channel recorded in
  portal.listeners, as a web process's live pages do, in the groups pages would watch: `grid` (the
  dashboards), both pools, --watch-nodes node pages and --watch-jobs job pages (`--watch-all`: every
  group the cycle could send to, the worst case).

Then `grid.telemetry.run_cycle()` (the Celery task's body) runs repeatedly: the recorded-series and
staleness queries against Prometheus, attribution, the thermal/XID guard, idle tracking and
efficiency sums (PostgreSQL), and the fan-out through Redis. The first cycles are warm-up (they
create the guard's and efficiency rows and cordon the hot nodes). Prints median and p95 of the
whole cycle and of each part; writes bench/results/telemetry_cycle.json; with --json the last
line is one JSON object (median_ms, p95_ms, parts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import (
    REPO,
    exit_cleanly_on_sigterm,
    free_port,
    log,
    machine_info,
    percentile,
    portal_env,
    scratch_database,
    setup_django,
    write_json,
)

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
HOT_NODES = 3  # one GPU at 91 °C: cordoned by the thermal guard during warm-up
XID_NODES = 1


# --- the grid and its jobs -----------------------------------------------------------------------


def pools_setting(nodes: int) -> str:
    half = nodes // 2
    return f"bench-a100:onprem:a100:{half}x8,bench-h100:onprem:h100:{nodes - half}x8"


def build_grid(rng: random.Random) -> dict[str, list[tuple[int, int]]]:
    """Sync the simulated nodes into the portal and fill ~90% of GPUs with running jobs.

    Returns, per node, (GPU index, portal job id) for every held GPU.
    """
    from cluster import services
    from cluster.models import Node
    from jobs.models import Job
    from jobs.states import JobState
    from portal.models import Membership, Team, TeamRole, User

    services.sync_nodes()
    owner = User.objects.create_user("bench", "bench@example.org", "bench")
    team = Team.objects.create(slug="bench", name="bench")
    Membership.objects.create(user=owner, team=team, role=TeamRole.RESEARCHER)
    planned: list[tuple[str, str, str, int]] = []
    for node in Node.objects.select_related("pool").order_by("name"):
        free = node.gpus
        while free and rng.random() < 0.9:
            gpus = min(free, rng.choice((1, 2, 4, 8)))
            planned.append((node.name, node.pool.name, node.gpu_model, gpus))
            free -= gpus
    jobs = Job.objects.bulk_create(
        Job(
            team=team,
            owner=owner,
            name=f"bench-{i}",
            gpu_model=model,
            gpus_per_node=gpus,
            gpus=gpus,
            walltime_s=86400,
            state=JobState.RUNNING,
            reason="",
            pool=pool,
            placement={node: gpus},
            backend="simulator",
            backend_job_id=str(i + 1),
        )
        for i, (node, pool, model, gpus) in enumerate(planned)
    )
    held: dict[str, list[tuple[int, int]]] = {}
    for job, (node_name, _, _, gpus) in zip(jobs, planned, strict=True):
        start = len(held.setdefault(node_name, []))
        held[node_name].extend((start + g, job.pk) for g in range(gpus))
    log(f"grid: {Node.objects.count()} nodes, {len(jobs)} running jobs holding {sum(p[3] for p in planned)} GPUs")
    return held


def exporter_texts(rng: random.Random, held: dict[str, list[tuple[int, int]]]) -> dict[str, str]:
    """One dcgm-exporter scrape per node, as `cluster.dcgm.render` writes them (dcgm-exporter 3.x/4.x names)."""
    from cluster import dcgm
    from cluster.gpus import GPU_MODELS
    from cluster.models import Node
    from cluster.simulator.model import GpuSample, gpu_uuid

    texts: dict[str, str] = {}
    nodes = list(Node.objects.order_by("name"))
    hot = {n.name for n in nodes[:HOT_NODES]}
    xid = {n.name for n in nodes[HOT_NODES : HOT_NODES + XID_NODES]}
    for node in nodes:
        spec = GPU_MODELS[node.gpu_model]
        jobs = dict(held.get(node.name, []))
        samples = []
        for gpu in range(node.gpus):
            job = jobs.get(gpu)
            util = rng.uniform(60, 99) if job else 0.0
            used = spec.memory_mib * rng.uniform(0.25, 0.95) if job else 420.0
            temp = 91.0 if node.name in hot and gpu == 0 else 31 + 0.42 * util + rng.uniform(-1, 1)
            samples.append(
                GpuSample(
                    hostname=node.name,
                    gpu=gpu,
                    uuid=gpu_uuid(node.name, gpu),
                    model=spec.product,
                    utilization=round(util, 1),
                    temperature_c=round(temp, 1),
                    power_w=round(spec.idle_w + (spec.tdp_w - spec.idle_w) * util / 100, 3),
                    fb_used_mib=round(used),
                    fb_free_mib=round(spec.memory_mib - used),
                    engine_active=round(util / 100 * 0.97, 4),
                    xid_errors=79 if node.name in xid and gpu == 0 else 0,
                    portal_job_id=job,
                )
            )
        texts[node.name] = dcgm.render(samples)
    return texts


# --- the exporters and Prometheus ------------------------------------------------------------------


@contextlib.contextmanager
def exporters(texts: dict[str, str]) -> Iterator[str]:
    """Serve every node's text at /sim/nodes/<node>/metrics (the path scripts/prometheus-dev scrapes)
    from a child process, so the scrapes do not take the measured process's interpreter lock."""
    port = free_port()
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    child = context.Process(target=_serve_exporters, args=(texts, port, ready), daemon=True)
    child.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the exporters' server did not start")
        yield f"127.0.0.1:{port}"
    finally:
        child.terminate()
        child.join(10)


def _serve_exporters(texts: dict[str, str], port: int, ready: Any) -> None:
    with _exporter_server(texts, port) as _:
        ready.set()
        threading.Event().wait()


@contextlib.contextmanager
def _exporter_server(texts: dict[str, str], port: int) -> Iterator[str]:
    bodies = {f"/sim/nodes/{name}/metrics": text.encode() for name, text in texts.items()}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = bodies.get(self.path)
            self.send_response(200 if body is not None else 404)
            body = body if body is not None else b"not found\n"
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # Prometheus closing a kept-alive connection at shutdown is not news

    server = Server(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def prometheus(exporter: str, nodes: list[str], interval: str, folder: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "PROM_DIR": str(folder),
        "PROM_PORT": str(port),
        "PORTAL": exporter,
        "NODES": ",".join(nodes),
        "METRICS_TOKEN": "bench",
        "SCRAPE_INTERVAL": interval,
    }
    script = str(REPO / "scripts" / "prometheus-dev")
    subprocess.run([script, "start"], env=env, check=True, cwd=REPO, timeout=300)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([script, "stop"], env=env, check=False, cwd=REPO, timeout=60)


def wait_for_series(url: str, gpus: int, timeout: float = 120.0, metric: str = "DCGM_FI_DEV_GPU_TEMP") -> None:
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError, IndexError, ValueError):
            rows = httpx.get(f"{url}/api/v1/query", params={"query": f"count({metric})"}, timeout=10).json()
            seen = int(float(rows["data"]["result"][0]["value"][1]))
            if seen >= gpus:
                log(f"Prometheus holds {seen} GPUs' {metric}")
                return
        time.sleep(1)
    raise RuntimeError(f"Prometheus holds {seen} of {gpus} GPUs after {timeout:.0f} s")


# --- listeners on the channel layer ----------------------------------------------------------------


LISTENER = "bench-listener"


def listen_on(groups: list[str]) -> str:
    """One channel in each of these groups, recorded in portal.listeners as a web process's hub does,
    so the fan-out really delivers each message."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from portal import listeners

    layer = get_channel_layer()

    async def join() -> str:
        channel: str = await layer.new_channel("bench.")
        for i in range(0, len(groups), 50):  # the Redis pool holds 100 connections
            await asyncio.gather(*(layer.group_add(g, channel) for g in groups[i : i + 50]))
        return channel

    channel = async_to_sync(join)()
    listeners.join(LISTENER, groups)
    return channel


def leave(groups: list[str], channel: str) -> None:
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from portal import listeners

    layer = get_channel_layer()

    async def discard() -> None:
        for i in range(0, len(groups), 50):
            await asyncio.gather(*(layer.group_discard(g, channel) for g in groups[i : i + 50]))

    async_to_sync(discard)()
    listeners.leave(LISTENER, groups)


def watched_groups(args: argparse.Namespace, nodes: list[str], pools: list[str], job_ids: list[int]) -> list[str]:
    """The groups pages watch: the dashboards' `grid`, the pools, and some node and job pages (or all)."""
    if args.watch_all:
        return [
            "grid",
            *(f"telemetry.node.{n}" for n in nodes),
            *(f"telemetry.pool.{p}" for p in pools),
            *(f"job.{j}" for j in job_ids),
        ]
    pick = random.Random(args.seed)
    watched_nodes = pick.sample(nodes, min(args.watch_nodes, len(nodes)))
    watched_jobs = pick.sample(job_ids, min(args.watch_jobs, len(job_ids)))
    return [
        "grid",
        *(f"telemetry.pool.{p}" for p in pools),
        *(f"telemetry.node.{n}" for n in watched_nodes),
        *(f"job.{j}" for j in watched_jobs),
    ]


# --- measuring -------------------------------------------------------------------------------------


# The cycle's laps (grid.telemetry.run_cycle): writes are the efficiency rows' UPDATE; the guard's
# writes (changed memories only) are inside `guard`.
PARTS = ("query", "guard", "idle", "writes", "finalise", "fan_out")


def stats(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 1),
        "p95": round(percentile(values, 95), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def run_cycles(count: int, gap_s: float) -> list[dict[str, Any]]:
    from grid import telemetry

    runs = []
    for _ in range(count):
        started = time.perf_counter()
        report = telemetry.run_cycle()
        wall = (time.perf_counter() - started) * 1000
        if report.stale:
            raise RuntimeError("the cycle was stale: Prometheus did not answer")
        runs.append(
            {
                "total_ms": round(wall, 1),
                **report.timings_ms,
                "gpus": report.gpus,
                "groups": report.groups,
                "guard_actions": len(report.guarded),
                "idle_verdicts": len(report.idle),
            }
        )
        time.sleep(gap_s)
    return runs


def query_parts(repeats: int) -> dict[str, Any]:
    """The cycle's read taken apart, and what runs beside the cycle:

    - `reference_ms`: the bare floor of this design, one HTTP request for the summaries and its JSON
      decoded, nothing else (no portal code);
    - `summaries_query_ms`: the same through the portal's client, read into a CycleView;
    - `every_gpu_query_ms`: every GPU's recorded series read into samples (what the cycle read
      before the summaries; now what a page that shows every GPU reads, once per process per tick);
    - `heat_read_ms`: the dashboard's heat map as a web process reads it (grid.live.telemetry_grid);
    - `job_page_read_ms`: one job page's GPUs as its socket reads them (jobs.live.gpu_now);
    - `accounting_ms`: one accounting pass adding a minute of recorded sums to every job's row
      (grid.telemetry.account_efficiency, every TELEMETRY_ACCOUNTING_S).
    """
    from datetime import UTC, datetime, timedelta

    from django.conf import settings

    from cluster.telemetry.prometheus import PrometheusTelemetry
    from cluster.telemetry.summaries import cycle_query
    from grid import telemetry
    from grid.live import telemetry_grid
    from jobs import live as job_live
    from jobs.models import Job
    from jobs.states import JobState

    parts: dict[str, list[float]] = {
        k: []
        for k in (
            "reference_ms",
            "summaries_query_ms",
            "every_gpu_query_ms",
            "heat_read_ms",
            "job_page_read_ms",
            "accounting_ms",
        )
    }
    source = telemetry.source_for(telemetry.held_jobs())
    assert isinstance(source, PrometheusTelemetry)  # the benchmark runs against its own Prometheus
    job = Job.objects.filter(state=JobState.RUNNING).order_by("pk").first()
    assert job is not None
    job.started_at = datetime.now(UTC)  # the bench's jobs were written running, with no start time
    client = httpx.Client(timeout=30, headers={"Accept-Encoding": "identity"})
    size = body_bytes = 0
    for i in range(repeats):
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        body = client.get(f"{source.client.url}/api/v1/query", params={"query": cycle_query(), "time": now.timestamp()}).content
        size = len(json.loads(body)["data"]["result"])
        body_bytes = len(body)
        t1 = time.perf_counter()
        view = source.cycle_view(settings.IDLE_THRESHOLD, now)
        t2 = time.perf_counter()
        every = source.samples(None, now)
        t3 = time.perf_counter()
        telemetry_grid()
        t4 = time.perf_counter()
        job_live.gpu_now(job)
        t5 = time.perf_counter()
        if i < 3:  # each pass moves the cursor a minute back in time, as if the worker had been away
            from cluster.models import EfficiencyCursor

            EfficiencyCursor.objects.update(until=now - timedelta(seconds=60 + 3 * i))
            t6 = time.perf_counter()
            telemetry.account_efficiency(source)
            parts["accounting_ms"].append((time.perf_counter() - t6) * 1000)
        assert view.samples is None and len(every) == 8 * len(view.guard.reporting)
        for key, (a, b) in zip(parts, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)), strict=False):
            parts[key].append((b - a) * 1000)
    return {"summary_series": size, "summary_response_bytes": body_bytes, **{k: stats(v) for k, v in parts.items() if v}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=30, help="measured cycles (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between cycles")
    parser.add_argument("--scrape-interval", default="2s")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--watch-nodes", type=int, default=20, help="node pages open (groups with a listener)")
    parser.add_argument("--watch-jobs", type=int, default=200, help="job pages open (groups with a listener)")
    parser.add_argument("--watch-all", action="store_true", help="a listener in every group the cycle could send to")
    parser.add_argument("--push", action="store_true", help="the cycle also reads every GPU and pushes the pages' figures")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--output", default="telemetry_cycle.json", help="file name under bench/results/")
    args = parser.parse_args()
    for name in ("nodes", "cycles", "warmup", "watch_nodes", "watch_jobs"):
        if getattr(args, name) < (1 if name in ("nodes", "cycles") else 0):
            parser.error(f"--{name.replace('_', '-')}: must be at least {1 if name in ('nodes', 'cycles') else 0}")
    exit_cleanly_on_sigterm()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="telemetry-bench-") as folder, scratch_database("bench_telemetry") as db:
        env = portal_env(db, Path(folder))
        env.update(
            REDIS_URL=REDIS_URL,
            SIM_POOLS=pools_setting(args.nodes),
            GUARD_HOT_WINDOW_S="0",
            TELEMETRY_STALE_AFTER_S="30",
            PROMETHEUS_TIMEOUT_S="10",
            EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
        )
        setup_django(env)
        held = build_grid(rng)
        texts = exporter_texts(rng, held)
        from cluster.models import Node, Pool
        from jobs.models import Job
        from jobs.states import HOLDS_GPUS

        nodes = sorted(texts)
        job_ids = list(Job.objects.filter(state__in=HOLDS_GPUS).values_list("id", flat=True))
        groups = watched_groups(args, nodes, list(Pool.objects.values_list("name", flat=True)), job_ids)
        with exporters(texts) as exporter, prometheus(exporter, nodes, args.scrape_interval, Path(folder) / "prometheus") as prom:
            os.environ["PROMETHEUS_URL"] = prom
            from django.conf import settings

            settings.PROMETHEUS_URL = prom
            wait_for_series(prom, 8 * args.nodes)
            wait_for_series(prom, 8 * args.nodes, metric="gpu:temperature_c")  # the recording rules ran
            wait_for_series(prom, args.nodes, metric="node:gpus_reporting:count")  # the summaries too
            # As a site with Prometheus runs by default: pages read what they show (see docs/telemetry.md);
            # --push measures the cycle that also reads every GPU and pushes it to the pages listened to.
            settings.TELEMETRY_PUSH = args.push
            channel = listen_on(groups)
            load_before = os.getloadavg()[0]
            try:
                log(f"{args.warmup} warm-up cycle(s)")
                warmup = run_cycles(args.warmup, args.gap)
                log(f"{args.cycles} measured cycle(s)")
                runs = run_cycles(args.cycles, args.gap)
                parts = query_parts(10)
            finally:
                leave(groups, channel)
            cordoned = Node.objects.exclude(state="ready").count()
        result = {
            "benchmark": "telemetry_cycle",
            "command": "python bench/telemetry_cycle.py " + " ".join(sys.argv[1:]),
            "target_ms": 500,
            "nodes": args.nodes,
            "gpus": 8 * args.nodes,
            "running_jobs": len(job_ids),
            "groups_listened": len(groups),
            "scrape_interval": args.scrape_interval,
            "cycle_ms": stats([r["total_ms"] for r in runs]),
            "breakdown_ms": {k: stats([r[k] for r in runs]) for k in PARTS},
            "query_parts": parts,
            "per_cycle": {
                "gpus": runs[-1]["gpus"],
                "messages": runs[-1]["groups"],
                "guard_actions": sum(r["guard_actions"] for r in runs),
            },
            "warmup": warmup,
            "nodes_cordoned_after": cordoned,
            "runs": runs,
            "machine": machine_info(db),
            # Other work on this (shared) machine slows every part; the 1-minute load average says how much there was.
            "loadavg_1m_start_end": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
        result["met_target"] = result["cycle_ms"]["median"] <= result["target_ms"]
    summary = {
        "median_ms": result["cycle_ms"]["median"],
        "p95_ms": result["cycle_ms"]["p95"],
        "target_ms": result["target_ms"],
        "nodes": args.nodes,
        "groups_listened": len(groups),
        "parts_median_ms": {k: v["median"] for k, v in result["breakdown_ms"].items()},
        "reference_ms": parts["reference_ms"]["median"],
        "summary_series": parts["summary_series"],
        "push": args.push,
        "beside_the_cycle_median_ms": {
            k: parts[k]["median"] for k in ("accounting_ms", "heat_read_ms", "job_page_read_ms", "every_gpu_query_ms")
        },
        "loadavg_1m_start_end": result["loadavg_1m_start_end"],
    }
    result["summary"] = summary
    path = write_json(args.output, result)
    log(f"wrote {path}")
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            json.dumps({k: result[k] for k in ("cycle_ms", "breakdown_ms", "query_parts", "per_cycle", "met_target")}, indent=2)
        )


if __name__ == "__main__":
    main()
