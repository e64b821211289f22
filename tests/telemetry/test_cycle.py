"""One telemetry cycle against the simulated grid: thermal/XID cordon and override, stale data, idle jobs, efficiency."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings

from cluster import guard
from cluster.models import GuardState, JobEfficiency, Node, NodeEvent, SafeguardEvent, SimJob
from cluster.simulator.backend import SimulatorBackend
from cluster.simulator.model import GpuSample
from cluster.states import NodeState
from cluster.telemetry import TelemetryUnavailable
from grid import telemetry
from grid.live import heatmap_figure, telemetry_grid
from jobs import services
from jobs.models import Job
from jobs.states import JobState
from portal.models import User


@pytest.fixture(autouse=True)
def guard_settings(settings: Settings) -> None:
    settings.GUARD_HOT_WINDOW_S = 0
    settings.GUARD_COOL_WINDOW_S = 60
    settings.GUARD_DRAIN = False
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def running(job: Job, load: float = 0.9) -> Job:
    """The job, running at a known GPU load.

    The simulator draws a job's load from its id (one in twenty is idle, too cool to trip the
    guard even when overheating), and the id comes from a database sequence that every earlier
    test in the run advances; pinning the load keeps these tests independent of order.
    """
    services.run_admission_cycle()
    services.dispatch(job.pk)
    services.sync_jobs()
    SimJob.objects.filter(portal_job_id=job.pk).update(load=load)
    job.refresh_from_db()
    assert job.state == JobState.RUNNING, job.state
    return job


def node_of(job: Job) -> str:
    node: str = next(iter(job.placement))
    return node


class Down:
    def samples(self, hosts: list[str] | None = None, at: datetime | None = None) -> list[GpuSample]:
        raise TelemetryUnavailable("Prometheus did not answer in 2 s")

    def history(self, hosts: list[str], start: datetime, end: datetime, step_s: float) -> list[tuple[datetime, list[GpuSample]]]:
        raise TelemetryUnavailable("Prometheus did not answer in 2 s")


def test_an_overheating_node_is_cordoned_with_its_reason_and_operators_and_owners_are_told(
    grid: SimulatorBackend,
    alice: User,
    olivia: User,
    submit: Callable[..., Job],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    job = running(submit(alice))
    node = node_of(job)
    grid.inject_fault(node, "overheat")
    with django_capture_on_commit_callbacks(execute=True):
        report = telemetry.run_cycle(now=timezone.now() + timedelta(seconds=150))
    assert [(o.node, o.action) for o in report.guarded] == [(node, "cordon")]
    n = Node.objects.get(name=node)
    assert n.state == NodeState.CORDONED and n.reason.startswith("thermal: GPU")
    assert NodeEvent.objects.filter(node=n, actor="thermal-guard", to_state=NodeState.CORDONED).exists()
    assert SafeguardEvent.objects.filter(node=node, kind="cordon", actor="thermal-guard").exists()
    recipients = {address for m in mail.outbox for address in m.to}
    assert {"olivia@example.org", "alice@example.org"} <= recipients


def test_a_cool_node_stays_ready(grid: SimulatorBackend, alice: User, submit: Callable[..., Job]) -> None:
    running(submit(alice))
    report = telemetry.run_cycle()
    assert report.guarded == [] and not Node.objects.exclude(state=NodeState.READY).exists()


def test_an_xid_cordons_and_the_guard_never_lets_go_but_an_operator_can(grid: SimulatorBackend, olivia: User) -> None:
    grid.inject_fault("onprem-h100-01", "xid")
    telemetry.run_cycle()
    assert Node.objects.get(name="onprem-h100-01").reason == "health: XID 79 on GPU 0"
    grid.clear_fault("onprem-h100-01")
    telemetry.run_cycle(now=timezone.now() + timedelta(hours=2))
    assert Node.objects.get(name="onprem-h100-01").state == NodeState.CORDONED
    guard.override("onprem-h100-01", olivia, "GPU reset done")
    assert Node.objects.get(name="onprem-h100-01").state == NodeState.READY
    event = SafeguardEvent.objects.get(kind="override")
    assert event.actor == "olivia" and event.reason.startswith("GPU reset done")


def test_an_override_keeps_the_guard_off_the_node_while_it_lasts(grid: SimulatorBackend, olivia: User) -> None:
    grid.inject_fault("onprem-h100-01", "xid")
    telemetry.run_cycle()
    guard.override("onprem-h100-01", olivia, "known flaky counter", hold_s=600)
    telemetry.run_cycle()
    assert Node.objects.get(name="onprem-h100-01").state == NodeState.READY
    telemetry.run_cycle(now=timezone.now() + timedelta(seconds=700))
    assert Node.objects.get(name="onprem-h100-01").state == NodeState.CORDONED


def test_only_operators_may_override_and_only_with_a_reason(grid: SimulatorBackend, alice: User, olivia: User) -> None:
    with pytest.raises(guard.GuardError):
        guard.override("onprem-h100-01", alice, "mine now")
    with pytest.raises(guard.GuardError):
        guard.override("onprem-h100-01", olivia, "  ")


def test_hysteresis_on_the_real_path_uncordons_after_the_cool_window(
    grid: SimulatorBackend, alice: User, submit: Callable[..., Job]
) -> None:
    job = running(submit(alice), load=0.95)
    node = node_of(job)
    grid.inject_fault(node, "overheat")
    start = timezone.now()
    telemetry.run_cycle(now=start + timedelta(seconds=150))
    grid.clear_fault(node)
    SimJob.objects.update(ended_at=start, state="cancelled")  # the GPU cools to ambient
    telemetry.run_cycle(now=start + timedelta(seconds=400))
    assert Node.objects.get(name=node).state == NodeState.CORDONED  # cool, but not for the whole window yet
    telemetry.run_cycle(now=start + timedelta(seconds=470))
    assert Node.objects.get(name=node).state == NodeState.READY
    assert SafeguardEvent.objects.filter(node=node, kind="uncordon").exists()


def test_prometheus_down_makes_the_cycle_stale_and_decides_nothing(
    grid: SimulatorBackend, alice: User, submit: Callable[..., Job]
) -> None:
    job = running(submit(alice))
    GuardState.objects.create(node=node_of(job), trip="thermal", reason="thermal: hot")
    Node.objects.filter(name=node_of(job)).update(state=NodeState.CORDONED)
    report = telemetry.run_cycle(source=Down())
    assert report.stale and report.guarded == [] and report.idle == []
    assert Node.objects.get(name=node_of(job)).state == NodeState.CORDONED


def test_the_pages_survive_prometheus_being_down(
    grid: SimulatorBackend, alice: User, submit: Callable[..., Job], settings: Settings, web: Callable[[User | None], Client]
) -> None:
    job = running(submit(alice))
    settings.PROMETHEUS_URL = "http://127.0.0.1:9"  # nothing listens on the discard port
    settings.PROMETHEUS_TIMEOUT_S = 0.5
    assert telemetry_grid()["stale"] is True
    assert web(alice).get(f"/jobs/{job.pk}/").status_code == 200
    assert web(alice).get("/").status_code == 200


def test_an_idle_job_is_warned_then_stopped_by_its_teams_policy(
    grid: SimulatorBackend,
    alice: User,
    submit: Callable[..., Job],
    settings: Settings,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    settings.IDLE_WARN_AFTER_S = 0
    settings.IDLE_ACT_AFTER_S = 10
    settings.IDLE_TEAM_ACTIONS = "vision=stop"
    job = running(submit(alice), load=0.0)
    t0 = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        telemetry.run_cycle(now=t0)
    assert SafeguardEvent.objects.filter(portal_job_id=job.pk, kind="idle_warning").exists()
    assert any("idle" in m.subject for m in mail.outbox)
    telemetry.run_cycle(now=t0 + timedelta(seconds=20))
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
    assert job.events.filter(actor="idle-guard", to_state="cancelled").exists()
    assert JobEfficiency.objects.get(portal_job_id=job.pk).idle_decision == "stopped"


def test_the_default_policy_only_warns(
    grid: SimulatorBackend, alice: User, submit: Callable[..., Job], settings: Settings
) -> None:
    settings.IDLE_WARN_AFTER_S = 0
    settings.IDLE_ACT_AFTER_S = 0
    job = running(submit(alice), load=0.0)
    for seconds in (0, 5, 10):
        telemetry.run_cycle(now=timezone.now() + timedelta(seconds=seconds))
    job.refresh_from_db()
    assert job.state == JobState.RUNNING


def test_efficiency_is_summed_while_running_and_fixed_when_the_job_ends(
    grid: SimulatorBackend, alice: User, submit: Callable[..., Job]
) -> None:
    job = running(submit(alice))
    for _ in range(3):
        telemetry.run_cycle()
    row = JobEfficiency.objects.get(portal_job_id=job.pk)
    assert row.samples == 3 and not row.final
    services.cancel(alice, job)
    telemetry.run_cycle()
    row.refresh_from_db()
    assert row.final and row.mean_utilization is not None and row.memory_peak_mib > 0 and 0 <= row.idle_fraction <= 1


def test_the_heat_map_is_a_figure_of_nodes_by_gpu(grid: SimulatorBackend) -> None:
    grid_data = telemetry_grid()
    figure = heatmap_figure(grid_data["heat"], "util")
    trace = figure["data"][0]
    assert trace["type"] == "heatmap" and list(trace["y"]) == grid_data["heat"]["nodes"]
    assert len(trace["x"]) == 8 and trace["zmax"] == 100


def test_live_messages_go_to_node_pool_job_and_grid_groups(
    grid: SimulatorBackend, alice: User, submit: Callable[..., Job]
) -> None:
    job = running(submit(alice))
    samples = telemetry.source_for(telemetry.held_jobs()).samples()
    by_job = telemetry.samples_by_job(samples, {job.pk})
    groups = [g for g, _ in telemetry.live_messages(samples, by_job, telemetry.held_jobs(), timezone.now())]
    assert groups[0] == "grid" and f"job.{job.pk}" in groups
    assert f"telemetry.node.{node_of(job)}" in groups and "telemetry.pool.onprem-a100" in groups
    grid_message = telemetry.live_messages(samples, by_job, [], timezone.now())[0][1]
    assert not re.search(rf"\b{job.pk}\b", str(grid_message["heat"]["nodes"]))  # the heat map names no job
