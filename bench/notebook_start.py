"""Benchmark: time from the click (the start form's POST) to a usable notebook, on the simulator and on the
local Slurm cluster, and the proxy's overhead per request against opening the server directly.

Each backend runs in its own process on its own scratch database (`--phase simulator`, `--phase slurm`);
the parent runs both and the proxy phase, and prints one JSON object on its last line.

- click to usable: the start form is POSTed as alice through Django's test client (the same view,
  middleware and services as a browser's click; no HTTP server), then the bench process runs the
  portal's loop as the worker and beat would (admission, dispatch, sync, notebook refresh, every
  `--poll` seconds) until a GET through the proxy of the server's `api/status` answers 200. Split
  into click to job running and job running to server answering.
- proxy overhead: with a ready simulator notebook behind the portal served by daphne, `--requests`
  GETs of `api/status` through the proxy (session cookie; the proxy adds the token) and the same
  number straight to the Jupyter server with its token (the bare reference), interleaved in blocks of
  25, one at a time on keep-alive connections.

    flock /tmp/bench.lock .venv/bin/python bench/notebook_start.py --json      # writes bench/results/notebook_start.json
    flock /tmp/bench.lock .venv/bin/python bench/notebook_start.py --repeat 5 --requests 400 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import (
    data_dir,
    log,
    machine_info,
    percentile,
    portal_env,
    portal_servers,
    scratch_database,
    setup_django,
    write_json,
)

REPO = Path(__file__).resolve().parent.parent
SLURM_SCRIPT = REPO / "scripts" / "slurm-dev-cluster"
SLURM_USER = "portal-bench"  # a Unix user the dev cluster creates; jobs run as the notebook's owner
BLOCK = 25


def world(backend: str) -> Any:
    """Team `bench` with room for the notebooks, its member, the priority classes; the backend's nodes."""
    from django.conf import settings
    from django.core.management import call_command

    from cluster import services as cluster_services
    from cluster.backends import get_backend
    from portal.models import Membership, Team, User
    from quotas.models import PriorityClass, TeamQuota

    settings.CLUSTER_BACKEND = backend
    team = Team.objects.create(slug="bench", name="Bench")
    user = User.objects.create_user(username=SLURM_USER, password="x")
    Membership.objects.create(team=team, user=user)
    TeamQuota.objects.create(team=team, gpu_model="a100", guarantee=8, limit=16)
    for name, rank, preemptible in (("critical", 100, False), ("standard", 50, False), ("preemptible", 10, True)):
        PriorityClass.objects.update_or_create(name=name, defaults={"rank": rank, "preemptible": preemptible})
    if backend == "slurm":
        settings.SLURM_JOB_PREFIX = f"nbbench{int(time.time())}"
        site = sysconfig.get_paths()["purelib"]  # the nodes' users may not enter the directory of this interpreter
        settings.NOTEBOOK_NODE_PYTHON = f"env PYTHONPATH={site} /usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
        settings.NOTEBOOK_NODE_HOST = "127.0.0.1"
        call_command("sync_slurm", "--apply", verbosity=0)
    cluster_services.sync_nodes(get_backend())
    return user


def loop_once(notebook_id: int) -> None:
    """One turn of the portal's loop, as its worker and beat run it."""
    from jobs import services as job_services
    from jobs.models import Job
    from jobs.states import JobState
    from notebooks import services

    job_services.run_admission_cycle()
    admitted = list(Job.objects.filter(state=JobState.ADMITTED).values_list("id", flat=True))
    if admitted:
        job_services.dispatch_many(admitted)
    job_services.sync_jobs()
    services.refresh(notebook_id)


def click_to_usable(user: Any, poll_s: float, timeout_s: float) -> dict[str, float]:
    from django.test import Client

    from jobs import services as job_services
    from jobs.models import Job
    from jobs.states import JobState
    from notebooks import services
    from notebooks.models import Notebook

    client = Client(SERVER_NAME="127.0.0.1")
    client.force_login(user)
    form = {"team": "bench", "gpu_model": "a100", "gpus": "1", "lifetime_s": "900", "server_type": "jupyter"}
    clicked = time.perf_counter()
    answer = client.post("/notebooks/new/", form)
    assert answer.status_code == 302, answer.content[:300]
    notebook = Notebook.objects.get(pk=int(answer["Location"].rstrip("/").rsplit("/", 1)[1]))
    running_at = None
    while True:
        loop_once(notebook.pk)
        if running_at is None and Job.objects.filter(pk=notebook.job_id, state=JobState.RUNNING).exists():
            running_at = time.perf_counter()
        if client.get(f"{notebook.proxy_path}api/status").status_code == 200:
            usable = time.perf_counter()
            break
        if time.perf_counter() - clicked > timeout_s:
            raise SystemExit(f"notebook {notebook.pk} not usable after {timeout_s} s")
        time.sleep(poll_s)
    services.stop(user, notebook)
    job_services.cancel_on_backend(notebook.job_id)  # the worker's task after a cancel
    running = running_at or usable
    return {
        "click_to_usable_s": usable - clicked,
        "click_to_running_s": running - clicked,
        "running_to_usable_s": usable - running,
    }


def phase(backend: str, repeat: int, poll_s: float) -> dict[str, Any]:
    with scratch_database(f"bench_nb_{backend}") as url, data_dir() as folder:
        env = portal_env(url, folder)
        env["NOTEBOOK_WORK_DIR"] = str(folder / "notebooks")
        setup_django(env)
        user = world(backend)
        runs = []
        for run in range(repeat):
            log(f"{backend}: start {run + 1}/{repeat}")
            runs.append(click_to_usable(user, poll_s, 300))
    keys = runs[0].keys()
    return {
        "backend": backend,
        "runs": [{k: round(v, 3) for k, v in r.items()} for r in runs],
        **{f"{k.removesuffix('_s')}_median_s": round(statistics.median(r[k] for r in runs), 3) for k in keys},
    }


def timed_gets(client: Any, url: str, headers: dict[str, str], count: int) -> list[float]:
    out = []
    for _ in range(count):
        start = time.perf_counter()
        answer = client.get(url, headers=headers)
        out.append((time.perf_counter() - start) * 1000)
        assert answer.status_code == 200, answer.text[:200]
    return out


def proxy_phase(requests: int) -> dict[str, Any]:
    """A ready simulator notebook behind daphne: GETs through the proxy against GETs straight to the server."""
    import httpx

    with scratch_database("bench_nb_proxy") as url, data_dir() as folder:
        env = portal_env(url, folder)
        env["NOTEBOOK_WORK_DIR"] = str(folder / "notebooks")
        setup_django(env)
        from django.conf import settings
        from django.test import Client

        from notebooks import services
        from notebooks.models import Notebook

        user = world("simulator")
        notebook = services.start(user, {"team": "bench", "gpu_model": "a100"})
        deadline = time.monotonic() + 120
        while Notebook.objects.get(pk=notebook.pk).state != "ready":
            assert time.monotonic() < deadline, "the notebook did not become ready"
            loop_once(notebook.pk)
            time.sleep(0.2)
        notebook.refresh_from_db()
        session = Client(SERVER_NAME="127.0.0.1")
        session.force_login(user)
        cookie = f"{settings.SESSION_COOKIE_NAME}={session.cookies[settings.SESSION_COOKIE_NAME].value}"
        with portal_servers(env, 1, folder / "logs") as [server]:
            via_proxy: list[float] = []
            direct: list[float] = []
            with httpx.Client(timeout=30) as client:
                timed_gets(client, f"{server.url}{notebook.proxy_path}api/status", {"Cookie": cookie}, 10)  # warm both
                for _ in range(max(1, requests // BLOCK)):
                    direct += timed_gets(
                        client, f"{notebook.server_url}{notebook.proxy_path}api/status",
                        {"Authorization": f"token {services.token_for(notebook)}"}, BLOCK,
                    )  # fmt: skip
                    via_proxy += timed_gets(client, f"{server.url}{notebook.proxy_path}api/status", {"Cookie": cookie}, BLOCK)
        services.stop(user, notebook)
        machine = machine_info(url)

    def stats(values: list[float]) -> dict[str, float]:
        return {
            "p50_ms": round(percentile(values, 50), 2), "p95_ms": round(percentile(values, 95), 2),
            "mean_ms": round(statistics.fmean(values), 2),
        }  # fmt: skip

    return {
        "requests_each": len(direct), "direct": stats(direct), "proxy": stats(via_proxy),
        "overhead_p50_ms": round(percentile(via_proxy, 50) - percentile(direct, 50), 2), "machine": machine,
    }  # fmt: skip


def run_child(args: argparse.Namespace, name: str) -> dict[str, Any] | None:
    command = [sys.executable, __file__, "--phase", name, "--repeat", str(args.repeat), "--poll", str(args.poll)]
    command += ["--requests", str(args.requests)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    sys.stderr.write(done.stderr[-3000:])
    if done.returncode != 0 or not done.stdout.strip():
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phase", choices=["simulator", "slurm", "proxy"], help="run one phase (the parent runs all)")
    parser.add_argument("--repeat", type=int, default=3, help="notebooks started per backend")
    parser.add_argument("--requests", type=int, default=200, help="GETs through the proxy, and as many straight to the server")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between turns of the portal's loop")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    args = parser.parse_args()
    if args.phase:
        result = proxy_phase(args.requests) if args.phase == "proxy" else phase(args.phase, args.repeat, args.poll)
        print(json.dumps(result))
        return
    simulator = run_child(args, "simulator")
    slurm_up = subprocess.run([str(SLURM_SCRIPT), "status"], capture_output=True, check=False).returncode == 0
    slurm = run_child(args, "slurm") if slurm_up else None
    proxy = run_child(args, "proxy")
    result = {
        "simulator": simulator,
        "slurm": slurm if slurm_up else {"skipped": "the dev Slurm cluster is not running (scripts/slurm-dev-cluster start)"},
        "proxy": proxy,
        "simulator_click_to_usable_s": simulator and simulator["click_to_usable_median_s"],
        "slurm_click_to_usable_s": slurm and slurm["click_to_usable_median_s"],
        "proxy_overhead_p50_ms": proxy and proxy["overhead_p50_ms"],
        "command": "python bench/notebook_start.py " + " ".join(sys.argv[1:]),
    }
    for name in ("simulator", "slurm"):
        found = result[name]
        if found and "click_to_usable_median_s" in found:
            log(f"{name}: click to usable, median {found['click_to_usable_median_s']} s over {len(found['runs'])} starts")
    if proxy:
        log(
            f"proxy: p50 {proxy['proxy']['p50_ms']} ms vs direct {proxy['direct']['p50_ms']} ms ({proxy['overhead_p50_ms']:+} ms)"
        )
    write_json("notebook_start.json", result)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
