"""Each control loop's duration, lag and counts: recorded per run, shown on /metrics."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from pytest_django import Settings

from cluster import tasks as cluster_tasks
from cluster.simulator.backend import SimulatorBackend
from jobs import services
from jobs import tasks as job_tasks
from jobs.models import Job
from portal import loops
from portal.models import ControlLoop, User


def samples(client: Client) -> dict[tuple[str, str], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            if "loop" in sample.labels:
                found[(sample.name, sample.labels["loop"])] = sample.value
    return found


def test_a_run_is_recorded_and_the_next_one_adds_up(db: None, settings: Settings) -> None:
    settings.GRID_CYCLE_S = 3.0
    with loops.timed("admission"):
        pass
    with loops.timed("admission"):
        pass
    loop = ControlLoop.objects.get(name="admission")
    assert loop.runs == 2 and loop.failures == 0
    assert loop.period_s == 3.0
    assert loop.last_ok_at == loop.last_finished_at and loop.last_error == ""
    assert 0 <= loop.last_duration_s <= loop.seconds_total


def test_a_failed_run_counts_as_a_failure_and_the_error_still_reaches_the_caller(db: None) -> None:
    with loops.timed("sync"):
        pass
    good = ControlLoop.objects.get(name="sync").last_ok_at
    with pytest.raises(RuntimeError, match="backend gone"), loops.timed("sync"):
        raise RuntimeError("backend gone")
    loop = ControlLoop.objects.get(name="sync")
    assert (loop.runs, loop.failures) == (2, 1)
    assert good is not None and loop.last_ok_at == good and loop.last_finished_at > good
    assert loop.last_error == "RuntimeError: backend gone"


def test_the_nodes_loop_runs_every_fifth_cycle(db: None, settings: Settings) -> None:
    settings.GRID_CYCLE_S = 2.0
    settings.TELEMETRY_CYCLE_S = 7.0
    assert loops.period_of("nodes") == 10.0
    assert loops.period_of("telemetry") == 7.0


def test_the_tasks_record_their_loops(grid: SimulatorBackend, alice: User, submit: Callable[..., Job]) -> None:
    submit(alice, gpus_per_node=1)
    job_tasks.admission_cycle()
    job_tasks.sync_backend()
    cluster_tasks.sync_nodes()
    assert set(ControlLoop.objects.values_list("name", flat=True)) == {"admission", "sync", "nodes"}
    assert all(loop.runs == 1 and loop.failures == 0 for loop in ControlLoop.objects.all())


def test_metrics_show_duration_lag_period_and_counts(
    grid: SimulatorBackend, web: Callable[[User | None], Client], olivia: User
) -> None:
    services.run_admission_cycle()
    now = timezone.now()
    ControlLoop.objects.create(
        name="telemetry", period_s=2.0, last_started_at=now - timedelta(seconds=61), last_finished_at=now - timedelta(seconds=60),
        last_ok_at=now - timedelta(seconds=60), last_duration_s=0.25, runs=40, failures=3, seconds_total=9.5,
    )  # fmt: skip
    with loops.timed("admission"):
        pass
    found = samples(web(olivia))
    assert found[("gridportal_control_loop_duration_seconds", "telemetry")] == 0.25
    assert 57.5 <= found[("gridportal_control_loop_lag_seconds", "telemetry")] <= 62.0  # 60 s since the last good run - 2 s
    assert found[("gridportal_control_loop_period_seconds", "telemetry")] == 2.0
    assert found[("gridportal_control_loop_runs_total", "telemetry")] == 40
    assert found[("gridportal_control_loop_failures_total", "telemetry")] == 3
    assert found[("gridportal_control_loop_seconds_total", "telemetry")] == 9.5
    assert found[("gridportal_control_loop_lag_seconds", "admission")] == 0.0  # just ran
    assert found[("gridportal_control_loop_runs_total", "admission")] == 1


def test_a_loop_that_never_succeeded_lags_from_its_first_run(db: None) -> None:
    with pytest.raises(ValueError), loops.timed("telemetry"):
        raise ValueError("no prometheus")
    loop = ControlLoop.objects.get(name="telemetry")
    later = loop.last_started_at + timedelta(seconds=30)
    assert loop.last_ok_at is None
    assert loops.lag_s(loop, later) == pytest.approx(30 - loop.period_s)


def test_only_operators_see_the_loops(db: None, alice: User, olivia: User) -> None:
    with loops.timed("admission"):
        pass
    assert not ControlLoop.objects.restrict(alice, "view").exists()
    assert ControlLoop.objects.restrict(olivia, "view").count() == 1
