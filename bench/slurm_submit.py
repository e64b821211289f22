"""Benchmark: 200 one-GPU jobs through the portal onto the dev Slurm cluster, beside raw `sbatch`.

Both phases run on the same cluster in the same run, one after the other, with the same jobs
(`sleep 1`, one GPU, alternating A100 and H100 so all 32 GPUs are used):

- raw: one shell as the job's user runs `sbatch` 200 times in a loop; a poller sees each job RUNNING
  through slurmrestd.
- portal: 200 `jobs.services.submit` calls, then the portal's own loop as a worker runs it
  (`jobs.services.follow_backend`: a sync every 50 ms, one squeue run each, and an admission cycle
  with its dispatch as soon as a sync sees GPUs given back) until the portal shows every job running.

Figures: submission throughput (jobs/s until the last one is in Slurm, or in the portal), per-job
latency from submit to RUNNING as each side observes it (p50/p95), and the makespan (first submit
to last job seen running). Target: the portal's makespan within 20% of raw Slurm's.
The dev cluster is started if it is not running (and stopped again afterwards).

    .venv/bin/python bench/slurm_submit.py             # writes bench/results/slurm_submit.json
    .venv/bin/python bench/slurm_submit.py --jobs 50
    .venv/bin/python bench/slurm_submit.py --repeat 3 --json   # raw, portal, raw, portal ...; JSON last line

With `--repeat` the phases alternate and the figures are medians; `ratio` is the portal's median
makespan over raw sbatch's. The portal phase also reports where its loop spent the time (sync,
admission, dispatch, idle).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import data_dir, log, machine_info, percentile, portal_env, scratch_database, setup_django, write_json

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "slurm-dev-cluster"
USER = "portal-bench"
MODELS = ("a100", "h100")
POLL_S = 0.1
QUOTA_LIMIT = 32  # per model; each model has 16 GPUs


def summary(name: str, submit_s: float, submitted: dict[Any, float], running: dict[Any, float], start: float) -> dict[str, Any]:
    latencies = [running[k] - submitted[k] for k in running]
    return {
        "phase": name,
        "jobs": len(submitted),
        "submit_s": round(submit_s, 3),
        "submit_jobs_per_s": round(len(submitted) / submit_s, 1),
        "latency_p50_s": round(percentile(latencies, 50), 3),
        "latency_p95_s": round(percentile(latencies, 95), 3),
        "first_running_s": round(min(running.values()) - start, 3),
        "makespan_s": round(max(running.values()) - start, 3),
    }


# --- raw sbatch --------------------------------------------------------------------------------------


def raw_phase(backend: Any, jobs: int, account: str) -> dict[str, Any]:
    lines = [
        f"sbatch --parsable -J raw-{i} -A {account} -p {MODELS[i % 2]} -q standard --gres=gpu:{MODELS[i % 2]}:1 "
        f"-t 5 -o /dev/null --wrap 'sleep 1' | sed 's/^/{i} /; s/$/ '$(date +%s.%N)'/'"
        for i in range(jobs)
    ]
    start = time.time()
    done = subprocess.run(
        ["runuser", "-u", USER, "--", "bash", "-c", "\n".join(lines)], capture_output=True, text=True, check=True
    )
    submit_s = time.time() - start
    slurm_ids, submitted = {}, {}
    for line in done.stdout.split("\n"):
        if line.strip():
            index, job_id, at = line.split()
            slurm_ids[job_id], submitted[job_id] = int(index), float(at)
    running: dict[str, float] = {}
    while len(running) < len(submitted):
        answer = backend._as_portal("GET", "/slurm/v0.0.38/jobs", "list jobs")
        now = time.time()
        for job in answer.get("jobs") or []:
            job_id = str(job["job_id"])
            if job_id in submitted and job_id not in running and job["job_state"] in ("RUNNING", "COMPLETING", "COMPLETED"):
                running[job_id] = now
        time.sleep(POLL_S)
    listed = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--Format=JobID:12,StartTime:14"],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin", "SLURM_TIME_FORMAT": "%s"},
    ).stdout.split("\n")  # fmt: skip
    starts = [float(at) - start for job_id, at in (line.split() for line in listed if line.strip()) if job_id in submitted]
    waves = {f"{s:.0f}": n for s, n in sorted(Counter(round(x) for x in starts if x > -1).items())}
    return {**summary("raw sbatch", submit_s, submitted, running, start), "slurm_starts_per_s": waves}


# --- through the portal ----------------------------------------------------------------------


@contextlib.contextmanager
def timed(module: Any, name: str, spent: dict[str, float], key: str) -> Iterator[None]:
    """Add the time spent in `module.name` to `spent[key]` while inside."""
    original = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        at = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[key] += time.perf_counter() - at

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


def portal_phase(jobs: int, user: Any) -> dict[str, Any]:
    from jobs import services
    from jobs.models import Job
    from jobs.states import JobState

    start = time.time()
    submitted: dict[int, float] = {}
    for i in range(jobs):
        raw = {"name": f"bench-{i}", "gpu_model": MODELS[i % 2], "gpus_per_node": 1, "walltime": 300, "command": ["sleep", "1"]}
        submitted[services.submit(user, raw)[0].pk] = time.time()
    created_s = time.time() - start
    running: dict[int, float] = {}
    submit_s = 0.0

    def observe() -> bool:
        """Between the portal's passes: note every job now seen running; True once all are."""
        nonlocal submit_s
        if not submit_s and not Job.objects.filter(state__in=(JobState.PENDING, JobState.ADMITTED)).exists():
            submit_s = time.time() - start  # every job is in Slurm
        now = time.time()
        seen = Job.objects.filter(pk__in=submitted, state__in=(JobState.RUNNING, JobState.SUCCEEDED)).values_list("id", flat=True)
        for job_id in seen:
            running.setdefault(job_id, now)
        return len(running) >= jobs

    spent = {"sync_s": 0.0, "admit_and_dispatch_s": 0.0}
    with timed(services, "sync_jobs", spent, "sync_s"), timed(services, "admit_and_dispatch", spent, "admit_and_dispatch_s"):
        cycles = services.follow_backend(600, until=observe)  # the worker's own loop, as deployed
    failed = Job.objects.filter(state=JobState.FAILED).count()
    if failed:
        raise SystemExit(f"{failed} portal jobs failed; see their reason_detail")
    # Slurm's own start times (whole seconds): how the waves went, apart from when the portal saw them.
    starts = sorted(t.timestamp() - start for t in Job.objects.filter(pk__in=submitted).values_list("started_at", flat=True) if t)
    loop = {
        "created_s": round(created_s, 3),
        "slurm_starts_per_s": {f"{s:.0f}": n for s, n in sorted(Counter(round(x) for x in starts).items())},
        **{key: round(value, 3) for key, value in spent.items()},
        "admission_cycles": cycles,
    }
    return {**summary("portal", submit_s or time.time() - start, submitted, running, start), "loop": loop}


def prepare_portal(jobs: int, backlog: int | None = None) -> Any:
    """A team with room for every job, its user, the priority classes, all compiled into Slurm."""
    from django.conf import settings
    from django.core.management import call_command

    from cluster import services as cluster_services
    from portal.models import Membership, Team, User
    from quotas.models import PriorityClass, TeamQuota

    settings.CLUSTER_BACKEND = "slurm"
    settings.SLURM_JOB_PREFIX = f"bench{int(time.time())}"
    settings.DEFAULT_TEAM_GPU_LIMIT = 64
    if backlog is not None:
        settings.SLURM_BACKLOG = backlog
    team = Team.objects.create(slug="bench", name="Bench")
    user = User.objects.create_user(username=USER, password="x")
    Membership.objects.create(team=team, user=user)
    # Limit 32 of each model's 16 GPUs: jobs queued in Slurm's backlog count against the quota as
    # running ones do, so a limit of exactly the pool's GPUs would leave no room for any backlog.
    for model in MODELS:
        TeamQuota.objects.create(team=team, gpu_model=model, guarantee=16, limit=QUOTA_LIMIT)
    # The classes tests/slurm compiles, so the dev cluster's QOS need no change between runs: slurmdbd
    # 22.05 refuses a second change of a QOS's preempt list ("QOS Preemption loop detected") until restarted.
    for name, rank, preemptible in (("critical", 100, False), ("standard", 50, False), ("preemptible", 10, True)):
        PriorityClass.objects.update_or_create(name=name, defaults={"rank": rank, "preemptible": preemptible})
    call_command("sync_slurm", "--apply", verbosity=0)
    from cluster.backends import get_backend

    backend = get_backend()
    cluster_services.sync_nodes(backend)
    return user, backend


def wait_idle(backend: Any) -> None:
    while any(
        j["job_state"] in ("PENDING", "RUNNING", "COMPLETING")
        for j in backend._as_portal("GET", "/slurm/v0.0.38/jobs", "list jobs").get("jobs") or []
    ):
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1, help="alternate raw and portal phases this many times")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    parser.add_argument(
        "--backlog", type=int, default=None, help="SLURM_BACKLOG for the portal phase (GPUs; 0: admit onto free GPUs only)"
    )
    args = parser.parse_args()
    started = subprocess.run([str(SCRIPT), "status"], capture_output=True, check=False).returncode != 0
    if started:
        subprocess.run([str(SCRIPT), "start"], check=True)
    raws: list[dict[str, Any]] = []
    portals: list[dict[str, Any]] = []
    try:
        with scratch_database("bench_slurm") as url, data_dir() as folder:
            setup_django(portal_env(url, folder))
            user, backend = prepare_portal(args.jobs, args.backlog)
            for run in range(args.repeat):
                wait_idle(backend)
                log(f"raw sbatch phase {run + 1}/{args.repeat}")
                raws.append(raw_phase(backend, args.jobs, "bench"))
                wait_idle(backend)
                log(f"portal phase {run + 1}/{args.repeat}")
                portals.append(portal_phase(args.jobs, user))
            wait_idle(backend)
            machine = machine_info(url)
    finally:
        if started:
            subprocess.run([str(SCRIPT), "stop"], check=False)
    for phase in (*raws, *portals):
        print(
            f"{phase['phase']:>10}: {phase['jobs']} jobs, submitted in {phase['submit_s']}s ({phase['submit_jobs_per_s']}/s), "
            f"submit->running p50 {phase['latency_p50_s']}s p95 {phase['latency_p95_s']}s, makespan {phase['makespan_s']}s"
        )
    raw_s = statistics.median(p["makespan_s"] for p in raws)
    portal_s = statistics.median(p["makespan_s"] for p in portals)
    from cluster.backends.slurm.config import SlurmConfig

    result = {
        "jobs": args.jobs,
        "backlog_gpus": SlurmConfig.from_settings().backlog_gpus,
        "repeat": args.repeat,
        "raw": raws,
        "portal": portals,
        "portal_overhead_pct": round(100 * (portal_s / raw_s - 1), 1),
        "machine": machine,
        "portal_makespan_s": round(portal_s, 3),
        "sbatch_makespan_s": round(raw_s, 3),
        "ratio": round(portal_s / raw_s, 3),
    }
    print(f"portal makespan vs raw Slurm: {result['portal_overhead_pct']:+.1f}% (target <= +20%)")
    write_json("slurm_submit.json", {**result, "command": "python bench/slurm_submit.py " + " ".join(sys.argv[1:])})
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
