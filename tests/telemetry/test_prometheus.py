"""A real Prometheus (Debian's, started by scripts/prometheus-dev) scrapes the simulator; the portal reads it back."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from django.utils import timezone
from pytest_django import Settings
from pytest_django.live_server_helper import LiveServer

from cluster import guard
from cluster.models import JobEfficiency, Node, SimJob
from cluster.safeguards import Seen
from cluster.simulator.backend import SimulatorBackend
from cluster.simulator.model import GpuSample
from cluster.states import NodeState
from cluster.telemetry import TelemetryUnavailable, get_telemetry
from cluster.telemetry import prometheus as prometheus_module
from cluster.telemetry.names import RECORDED, MetricNames
from cluster.telemetry.prometheus import PrometheusTelemetry
from cluster.telemetry.summaries import CycleView, view_of_samples
from grid import telemetry
from jobs import services
from jobs.models import Job
from jobs.states import JobState
from portal.models import User
from tests.stack import free_port

pytestmark = [pytest.mark.prometheus, pytest.mark.django_db(transaction=True)]
T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "prometheus-dev"
TOKEN = "prometheus-test-token"
NODES = "onprem-a100-01,onprem-a100-02,onprem-h100-01"


@pytest.fixture(scope="session")
def prometheus(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus scraping the live test server every second; stopped after the session."""
    if shutil.which("prometheus") is None and os.geteuid() != 0:
        pytest.skip("prometheus is not installed and cannot be installed without root")
    port = free_port()
    env = {
        **os.environ,
        "PROM_DIR": str(tmp_path_factory.mktemp("prometheus")),
        "PROM_PORT": str(port),
        "PORTAL": live_server.url.removeprefix("http://"),
        "NODES": NODES,
        "METRICS_TOKEN": TOKEN,
        "SCRAPE_INTERVAL": "1s",
    }
    subprocess.run([str(SCRIPT), "start"], env=env, check=True, cwd=ROOT, timeout=300)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, check=False, cwd=ROOT, timeout=60)


@pytest.fixture
def scraped(prometheus: str, grid: SimulatorBackend, settings: Settings) -> str:
    settings.METRICS_TOKEN = TOKEN
    settings.PROMETHEUS_URL = prometheus
    settings.PROMETHEUS_TIMEOUT_S = 2.0
    settings.GUARD_HOT_WINDOW_S = 0
    return prometheus


def wait_for(predicate: Callable[[], T], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError("timed out waiting for Prometheus")


def test_prometheus_scrapes_every_simulated_node_and_the_portal_reads_it_back(scraped: str) -> None:
    source = get_telemetry()
    assert isinstance(source, PrometheusTelemetry)
    samples = wait_for(lambda: (s := source.samples()) and len(s) == 24 and s)
    assert samples  # wait_for returns only a truthy answer
    assert {s.hostname for s in samples} == set(NODES.split(","))
    assert all(20 < s.temperature_c < 100 and s.model for s in samples)

    def dcgm_targets() -> list[dict[str, Any]]:
        targets = requests.get(f"{scraped}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return [t for t in targets if t["labels"]["job"] == "dcgm"]

    # A target reports its *last* scrape; one refused while the live server was still setting up (seen once
    # in CI: 403) is healthy again at its next scrape, which is what this checks.
    with contextlib.suppress(AssertionError):
        wait_for(lambda: all(t["health"] == "up" for t in dcgm_targets()))
    dcgm = dcgm_targets()
    assert len(dcgm) == 3 and all(t["health"] == "up" for t in dcgm), [t.get("lastError") for t in dcgm]


def test_a_range_query_backfills_history(scraped: str) -> None:
    source = get_telemetry()
    wait_for(lambda: len(source.samples()) == 24)
    time.sleep(2)
    end = datetime.now(UTC)
    points = source.history(["onprem-h100-01"], end - timedelta(seconds=30), end, 1.0)
    assert len(points) >= 2 and all({s.hostname for s in samples} == {"onprem-h100-01"} for _, samples in points)


def test_an_xid_seen_through_prometheus_cordons_the_node(scraped: str, grid: SimulatorBackend) -> None:
    grid.inject_fault("onprem-h100-01", "xid")
    source = telemetry.source_for(telemetry.held_jobs())
    wait_for(lambda: any(s.xid_errors for s in source.samples(["onprem-h100-01"])))

    def cordoned() -> bool:
        # Under load a scrape can lag a cycle: the GPU is then missing, which decides nothing, so try again.
        report = telemetry.run_cycle()
        assert not report.stale
        return Node.objects.get(name="onprem-h100-01").state == NodeState.CORDONED

    wait_for(cordoned, timeout=15)
    node = Node.objects.get(name="onprem-h100-01")
    assert node.state == NodeState.CORDONED and node.reason == "health: XID 79 on GPU 0"


def test_the_portals_own_metrics_are_scraped(scraped: str) -> None:
    def portal_up() -> bool:
        rows = requests.get(f"{scraped}/api/v1/query", params={"query": 'up{job="gridportal"}'}, timeout=5).json()["data"][
            "result"
        ]
        return bool(rows and rows[0]["value"][1] == "1")

    wait_for(portal_up)


def test_a_slow_or_absent_prometheus_is_unavailable_not_a_crash() -> None:
    source = PrometheusTelemetry(f"http://127.0.0.1:{free_port()}", MetricNames(), timeout_s=0.5)
    with pytest.raises(TelemetryUnavailable):
        source.samples()


def _all_24(source: PrometheusTelemetry) -> list[GpuSample]:
    samples = source.samples()
    return samples if len(samples) == 24 else []


def test_without_the_recording_rules_the_portal_asks_their_expressions_itself(
    scraped: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = get_telemetry()
    assert isinstance(source, PrometheusTelemetry)
    absent = tuple((f"absent:{name}", attr) for name, attr in RECORDED)

    def both() -> tuple[list[GpuSample], list[GpuSample]] | None:
        recorded = _all_24(source)
        # As if Prometheus had not loaded monitoring/prometheus-rules.yml: the recorded names find nothing.
        with monkeypatch.context() as patch:
            patch.setattr(prometheus_module, "RECORDED", absent)
            direct = _all_24(source)
        key = [(s.hostname, s.gpu, s.model, s.portal_job_id) for s in recorded]
        # A scrape between the two reads (a job of an earlier test leaving its GPUs): the next try agrees.
        return (recorded, direct) if recorded and key == [(s.hostname, s.gpu, s.model, s.portal_job_id) for s in direct] else None

    answers = wait_for(both)
    assert answers is not None
    recorded, direct = answers
    assert len(direct) == 24 and all(20 < s.temperature_c < 100 and s.utilization >= 0 for s in direct)
    assert all(abs(d.temperature_c - r.temperature_c) < 15 for d, r in zip(direct, recorded, strict=True))


def test_gpus_whose_series_are_stale_are_left_out_and_decide_nothing(scraped: str, grid: SimulatorBackend) -> None:
    grid.inject_fault("onprem-h100-01", "xid")
    fresh = telemetry.source_for(telemetry.held_jobs())
    wait_for(lambda: any(s.xid_errors for s in fresh.samples()))
    assert isinstance(fresh, PrometheusTelemetry)
    # Every scrape is older than a millisecond: all of them count as stale.
    stale = PrometheusTelemetry(scraped, MetricNames(), timeout_s=2.0, stale_after_s=0.001)
    assert stale.samples() == []
    report = telemetry.run_cycle(source=stale)
    assert report.gpus == 0 and report.guarded == []
    assert Node.objects.get(name="onprem-h100-01").state == NodeState.READY


# --- the recorded summaries (names.summary_rules): what the cycle reads at scale ---------------------


def _running(job: Job, load: float) -> Job:
    services.run_admission_cycle()
    services.dispatch(job.pk)
    services.sync_jobs()
    SimJob.objects.filter(portal_job_id=job.pk).update(load=load)
    job.refresh_from_db()
    assert job.state == JobState.RUNNING, job.state
    return job


def _summaries_and_samples_agree(source: PrometheusTelemetry, jobs: list[Job]) -> CycleView | None:
    view = source.cycle_view(0.05)
    every_gpu = view_of_samples(source.samples(), 0.05)
    if view.samples is not None or view.guard.reporting != every_gpu.guard.reporting:
        return None
    if sum(view.guard.reporting.values()) != 24:
        return None  # between tests the scrapes were refused (no token): wait until every node is scraped again
    if any(view.jobs.get(j.pk) != every_gpu.jobs.get(j.pk) or j.pk not in view.jobs for j in jobs):
        return None  # a scrape between the two reads; the next try agrees
    return view


def test_the_cycle_reads_the_recorded_summaries_and_sees_what_every_gpu_shows(
    scraped: str, alice: User, submit: Callable[..., Job]
) -> None:
    busy, idle = _running(submit(alice), 0.9), _running(submit(alice), 0.0)
    source = telemetry.source_for(telemetry.held_jobs())
    assert isinstance(source, PrometheusTelemetry)
    view = wait_for(lambda: _summaries_and_samples_agree(source, [busy, idle]))
    assert view is not None and view.tallies is None  # the sums come from history, by the accounting pass
    assert sum(view.guard.reporting.values()) == 24
    assert view.jobs[busy.pk].seen(busy.gpus) == Seen.BUSY and view.jobs[idle.pk].seen(idle.gpus) == Seen.IDLE
    hottest = {host: max(temps.values()) for host, temps in view.guard.hot.items()}
    every: dict[str, float] = {}
    for s in source.samples():
        every[s.hostname] = max(every.get(s.hostname, 0.0), s.temperature_c)
    assert set(hottest) == set(every) and all(abs(hottest[h] - every[h]) < 15 for h in every)


def test_without_summaries_for_this_threshold_the_cycle_reads_every_gpu(scraped: str) -> None:
    source = get_telemetry()
    assert isinstance(source, PrometheusTelemetry)
    wait_for(lambda: _all_24(source))
    view = source.cycle_view(0.123)  # the shipped rules are written for 0.05
    assert view.samples is not None and len(view.samples) == 24 and view.tallies is not None


def test_the_accounting_pass_adds_what_prometheus_recorded_once(
    scraped: str, alice: User, submit: Callable[..., Job], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.TELEMETRY_SCRAPE_INTERVAL_S = 1
    job = _running(submit(alice), 0.9)
    source = telemetry.source_for(telemetry.held_jobs())
    assert isinstance(source, PrometheusTelemetry)
    # The pass leaves out the last two evaluations and a second (maybe not written yet): wait until
    # the job's sums are recorded before that.
    wait_for(
        lambda: job.pk in source.tallies(0.05, timezone.now() - timedelta(seconds=60), timezone.now() - timedelta(seconds=4))
    )
    first = telemetry.account_efficiency(source)  # opens the cursor TELEMETRY_ACCOUNTING_S back
    assert first.start is not None and first.end is not None and first.end - first.start == timedelta(seconds=60)
    row = JobEfficiency.objects.get(portal_job_id=job.pk)
    assert row.samples > 0 and row.utilization_sum > 0 and row.memory_peak_mib > 0
    # A pass that dies half-way adds nothing and leaves the cursor: the next one adds the window once.
    time.sleep(3)
    later = timezone.now()
    monkeypatch.setattr(guard, "add_tallies", _boom)
    with pytest.raises(RuntimeError):
        telemetry.account_efficiency(source, later)
    assert telemetry.accounted_until() == first.end
    assert JobEfficiency.objects.get(portal_job_id=job.pk).samples == row.samples
    monkeypatch.undo()
    again = telemetry.account_efficiency(source, later)
    assert again.start == first.end and again.end is not None and again.end > first.end
    added = JobEfficiency.objects.get(portal_job_id=job.pk).samples - row.samples
    # One reading per GPU per rule evaluation (every second here) in the window, at most.
    seconds = (again.end - first.end).total_seconds()
    assert 0 < added <= job.gpus * (seconds + 1)
    # The same moment again: the cursor is there already, nothing is added twice.
    telemetry.account_efficiency(source, later)
    assert JobEfficiency.objects.get(portal_job_id=job.pk).samples == row.samples + added


def _boom(*args: Any, **kwargs: Any) -> int:
    raise RuntimeError("the worker died here")


def test_an_ended_job_is_made_final_only_once_its_end_is_accounted(
    scraped: str, alice: User, submit: Callable[..., Job], settings: Settings
) -> None:
    settings.TELEMETRY_SCRAPE_INTERVAL_S = 1
    job = _running(submit(alice), 0.9)
    source = telemetry.source_for(telemetry.held_jobs())
    assert isinstance(source, PrometheusTelemetry)
    wait_for(lambda: job.pk in source.tallies(0.05, timezone.now() - timedelta(seconds=30), timezone.now()))
    telemetry.run_cycle(source)
    services.cancel(alice, job)
    telemetry.run_cycle(source)
    assert not JobEfficiency.objects.get(portal_job_id=job.pk).final  # its last seconds are not accounted yet
    telemetry.account_efficiency(source, timezone.now() + timedelta(seconds=30))
    telemetry.run_cycle(source)
    row = JobEfficiency.objects.get(portal_job_id=job.pk)
    assert row.final and row.samples > 0 and row.mean_utilization is not None
