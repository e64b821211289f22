"""The trace replay: the same policy code, driven over simulated time."""

from __future__ import annotations

import random
from pathlib import Path

from jobs.policy import PolicyConfig, Quota
from jobs.policy.replay import ReplaySpec, TraceJob, default_quotas, load_trace, replay, shape

TRACE = Path(__file__).resolve().parent.parent / "fixtures" / "traces" / "itp-dev.csv"


def _synthetic(seed: int, count: int = 300) -> list[TraceJob]:
    rng = random.Random(seed)
    teams = ("big", "mid", "small")
    return [
        TraceJob(
            f"j{i}", i * 60.0, rng.uniform(300, 20_000), rng.choice((1, 1, 2, 4, 8, 16, 20)), rng.choices(teams, (6, 3, 1))[0]
        )
        for i in range(count)
    ]


def test_it_completes_every_job_without_limit_violations() -> None:
    for policy in ("fair", "fifo"):
        report = replay(_synthetic(1), ReplaySpec(nodes=6, gpus_per_node=8, policy=policy))
        assert report["completed"] == report["jobs"] == 300
        assert report["limit_violations"] == 0
        assert 0 < report["utilization"] <= 1


def test_fair_waits_less_than_strict_fifo_on_a_busy_grid() -> None:
    trace = _synthetic(2)
    fair = replay(trace, ReplaySpec(nodes=6, gpus_per_node=8, policy="fair"))
    fifo = replay(trace, ReplaySpec(nodes=6, gpus_per_node=8, policy="fifo"))
    assert fair["mean_wait_s"] < fifo["mean_wait_s"]


def test_reclaim_costs_work_since_the_last_checkpoint() -> None:
    # 'hog' borrows the whole grid with long jobs; 'owner' later wants its guarantee back.
    trace = [TraceJob(f"h{i}", 0.0, 50_000.0, 8, "hog") for i in range(4)]
    trace += [TraceJob(f"o{i}", 4000.0, 1000.0, 8, "owner") for i in range(2)]
    quotas = (Quota("hog", "gpu", 16, 32), Quota("owner", "gpu", 16, 32))
    report = replay(trace, ReplaySpec(nodes=4, gpus_per_node=8, policy="fair", checkpoint_interval_s=1800, quotas=quotas))
    assert report["preemptions"] == 2
    assert report["lost_gpu_s"] == 2 * 8 * (4000 - 3600)
    assert report["completed"] == 6
    assert report["limit_violations"] == 0
    assert report["per_team"]["owner"]["mean_wait_s"] == 0.0


def test_limits_hold_when_quotas_are_tight() -> None:
    # 24 is the smallest limit a 20-GPU job (three whole nodes) can run under.
    quotas = (Quota("big", "gpu", 8, 24), Quota("mid", "gpu", 8, 32), Quota("small", "gpu", 8, 48))
    report = replay(_synthetic(3), ReplaySpec(nodes=6, gpus_per_node=8, quotas=quotas, config=PolicyConfig(explain=False)))
    assert report["limit_violations"] == 0
    assert report["completed"] == 300


def test_large_jobs_take_whole_nodes_rounded_up() -> None:
    assert shape(3, 8) == (3, 1)
    assert shape(16, 8) == (8, 2)
    assert shape(20, 8) == (8, 3)


def test_the_fixture_trace_loads() -> None:
    jobs = load_trace(TRACE)
    assert len(jobs) == 4000
    assert max(j.gpus for j in jobs) == 64


def test_the_replay_measures_how_start_estimates_come_out() -> None:
    # Two nodes busy for 1,000 s, then a queue: the first waiting job is told 1,000 s, and gets it.
    trace = [TraceJob(f"busy{i}", 0.0, 1000.0, 8, "a") for i in range(2)]
    trace += [TraceJob(f"next{i}", 10.0, 500.0, 8, "b") for i in range(3)]
    report = replay(trace, ReplaySpec(2, 8, config=PolicyConfig(explain=True)))
    estimates = report["estimates"]
    assert estimates["jobs"] >= 1
    assert estimates["error_s"]["p10"] == 0.0  # the first in line starts when it was told
    assert "estimates" not in replay(trace, ReplaySpec(2, 8))


def test_a_start_estimate_is_shown_as_the_measured_range() -> None:
    from datetime import UTC, datetime, timedelta

    from django.test import override_settings

    from jobs.live import start_range

    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    with override_settings(START_ESTIMATE_RATIO_LOW=1.0, START_ESTIMATE_RATIO_HIGH=3.0):
        assert start_range(now + timedelta(hours=1), now) == (now + timedelta(hours=1), now + timedelta(hours=3))
        assert start_range(now - timedelta(minutes=5), now) == (now, now)  # overdue: "now", never the past


def test_default_quotas_split_the_pool_among_teams_not_jobs() -> None:
    quotas = default_quotas(["a", "b", "a", "a", "c", "b"], 768, "a100")
    assert [(q.team, q.guarantee, q.limit) for q in quotas] == [("a", 256, 768), ("b", 256, 768), ("c", 256, 768)]
