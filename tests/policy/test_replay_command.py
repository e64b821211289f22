"""`manage.py replay_trace` prints the replay's figures as JSON, without a database."""

from __future__ import annotations

import io
import json
from pathlib import Path

from django.core.management import call_command

KEYS = {
    "jobs", "completed", "mean_wait_s", "p50_wait_s", "p95_wait_s", "max_wait_s", "mean_jct_s", "makespan_s",
    "utilization", "limit_violations", "preemptions", "lost_gpu_s", "per_team", "fairness", "wall_s",
}  # fmt: skip


def test_it_emits_every_figure_for_policy_and_baseline(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    rows = ["job_id,submit_time_s,duration_s,num_gpus,team"]
    rows += [f"j{i},{i * 30},{600 + i * 7},{(1, 2, 8, 16)[i % 4]},team{i % 3}" for i in range(60)]
    trace.write_text("\n".join(rows) + "\n")
    out = io.StringIO()
    call_command(
        "replay_trace",
        str(trace),
        "--nodes",
        "4",
        "--gpus-per-node",
        "8",
        "--policy",
        "fair",
        "--baseline",
        "fifo",
        "--json",
        stdout=out,
    )
    report = json.loads(out.getvalue())
    for policy in ("fair", "fifo"):
        assert report[policy].keys() >= KEYS
        assert report[policy]["completed"] == 60
        assert {"mean_wait_s", "gpu_s", "share_of_gpu_time"} <= report[policy]["per_team"]["team0"].keys()
        assert {"jain_slowdown", "small_team_wait_ratio"} <= report[policy]["fairness"].keys()


def test_it_reads_a_quotas_file(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("job_id,submit_time_s,duration_s,num_gpus,team\na,0,100,8,x\nb,0,100,8,x\n")
    quotas = tmp_path / "q.json"
    quotas.write_text(json.dumps({"x": {"guarantee": 0, "limit": 8}}))
    out = io.StringIO()
    call_command("replay_trace", str(trace), "--nodes", "2", "--quotas", str(quotas), "--json", stdout=out)
    report = json.loads(out.getvalue())["fair"]
    assert report["completed"] == 2
    assert report["max_wait_s"] == 100.0
