"""Telemetry from dcgm-exporter as the NVIDIA GPU Operator runs it, through a real Prometheus and the
whole telemetry cycle, with the portal on the fake Kubernetes API server.

Under the GPU Operator the exporter's `Hostname` is its own pod's name. One exporter here is scraped
with the shipped relabelling (monitoring/dcgm-exporter-kubernetes-scrape.yml adds the pod's node as
`node`), the others without it: the portal asks the API server where their pods run. One names a pod
the API server does not know: its series decide nothing and are counted.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import yaml
from django.test import Client
from pytest_django import Settings

from cluster import services as cluster_services
from cluster.backends.kubernetes.backend import KubernetesBackend
from cluster.models import Node, UnresolvedExporter
from cluster.simulator.backend import SimulatorBackend
from cluster.states import NodeState
from cluster.telemetry import get_telemetry
from cluster.telemetry.prometheus import PrometheusTelemetry
from cluster.telemetry.summaries import CycleView
from grid import telemetry
from jobs import services
from jobs.models import Job
from jobs.states import JobState
from portal.models import User
from quotas.models import TeamQuota
from tests.k8s.fake_apiserver import FakeApiServer
from tests.stack import free_port

pytestmark = [pytest.mark.prometheus, pytest.mark.django_db(transaction=True)]
T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
SCRAPE = ROOT / "tests" / "fixtures" / "dcgm" / "dcgm-exporter-scrape-l4.prom"  # a real scrape, under the GPU Operator
SCRAPE_JOB = ROOT / "monitoring" / "dcgm-exporter-kubernetes-scrape.yml"
OPERATOR_NS = "gpu-operator"
NS = "team-vision"
MODEL = "NVIDIA A100-SXM4-80GB"
GPUS = 4

# Exporter pod -> (its node, whether Prometheus adds the node, whether the API server knows the pod).
RELABELLED = "nvidia-dcgm-exporter-7kq2d"  # on gpu-a100-1: the shipped relabelling adds node="gpu-a100-1"
BARE = "nvidia-dcgm-exporter-xpn6b"  # on gpu-a100-2: no node label; found by the DaemonSet's label
CUSTOM = "dcgm-exporter-custom-q7w"  # on gpu-a100-3: no node label, labelled otherwise; found by its name
GONE = "nvidia-dcgm-exporter-gone1"  # no node label, no such pod: unresolved
EXPORTERS = {RELABELLED: "gpu-a100-1", BARE: "gpu-a100-2", CUSTOM: "gpu-a100-3", GONE: ""}


def operator_scrape(exporter: str, temps: dict[int, float], pods: dict[int, tuple[str, str]], util: float = 0.0) -> str:
    """The real L4 scrape as the GPU Operator's exporter writes it for GPUS GPUs: `Hostname` the
    exporter pod's name, the `pod`/`namespace`/`container` of the pod using a GPU, where one does."""
    lines = []
    for line in SCRAPE.read_text().splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
        assert match, line
        name, labels, value = match.groups()
        labels = re.sub(r'Hostname="[^"]*"', f'Hostname="{exporter}"', labels)
        labels = re.sub(r'modelName="[^"]*"', f'modelName="{MODEL}"', labels)
        for gpu in range(GPUS):
            mine = re.sub(r'gpu="0"', f'gpu="{gpu}"', labels).replace("-1343419b1a1c", f"-{gpu:012d}")
            if gpu in pods:
                namespace, pod = pods[gpu]
                mine += f',container="main",namespace="{namespace}",pod="{pod}"'
            reading = value
            if name == "DCGM_FI_DEV_GPU_TEMP":
                reading = str(temps.get(gpu, 40.0))
            elif name == "DCGM_FI_DEV_GPU_UTIL" and gpu in pods:
                reading = str(util)
            elif name == "DCGM_FI_PROF_GR_ENGINE_ACTIVE" and gpu in pods:
                reading = str(util / 100)
            elif name == "DCGM_FI_DEV_FB_USED" and gpu in pods:
                reading = "30000"
            lines.append(f"{name}{{{mine}}} {reading}")
    return "\n".join(lines) + "\n"


class Exporters:
    """One HTTP server standing in for every exporter pod: GET /<pod>/metrics answers that pod's text."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {name: operator_scrape(name, {}, {}) for name in EXPORTERS}
        texts = self.texts

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                text = texts.get(self.path.strip("/").removesuffix("/metrics"))
                body = (text or "").encode()
                self.send_response(200 if text is not None else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def exporters() -> Iterator[Exporters]:
    served = Exporters()
    yield served
    served.stop()


def scrape_job(exporters: Exporters) -> dict[str, Any]:
    """The shipped job with its Kubernetes discovery replaced by the targets it would find: the same
    `__meta_kubernetes_*` labels on static targets, so the shipped relabelling runs as written."""
    [job] = yaml.safe_load(SCRAPE_JOB.read_text())
    del job["kubernetes_sd_configs"]
    job["scrape_interval"] = job["scrape_timeout"] = "1s"
    targets = []
    for pod, node in EXPORTERS.items():
        meta = {
            "__metrics_path__": f"/{pod}/metrics",
            "__meta_kubernetes_pod_label_app": "nvidia-dcgm-exporter",
            "__meta_kubernetes_pod_container_port_name": "gpu-metrics",
        }
        if pod == RELABELLED:
            meta["__meta_kubernetes_pod_node_name"] = node
        targets.append({"targets": [exporters.address], "labels": meta})
    job["static_configs"] = targets
    return dict(job)


@pytest.fixture(scope="module")
def operator_prometheus(exporters: Exporters, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (scripts/ensure-services installs it)")
    folder = tmp_path_factory.mktemp("prometheus-operator")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "monitoring" / "prometheus-rules.yml")],
        "scrape_configs": [scrape_job(exporters)],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "prometheus.log").open("w"),
        env={**os.environ},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), timeout=30)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def wait_for(predicate: Callable[[], T], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError("timed out waiting for Prometheus")


@pytest.fixture
def operator_grid(
    grid: SimulatorBackend, portal_on_fake: FakeApiServer, operator_prometheus: str, settings: Settings, alice: User, olivia: User
) -> FakeApiServer:
    """Three A100 nodes, the exporter pods of three of the four exporters, the portal reading Prometheus.
    (After `grid`, whose simulator nodes the sync from the API server then replaces.)"""
    fake = portal_on_fake
    fake.add_namespace(OPERATOR_NS)
    for pod, node in EXPORTERS.items():
        if node:
            fake.add_node(node, gpus=GPUS)
            labels = {"app": "nvidia-dcgm-exporter"} if pod != CUSTOM else {"app": "dcgm-custom"}
            fake.add_pod(OPERATOR_NS, pod, node, labels=labels, owner_kind="DaemonSet")
    cluster_services.sync_nodes()
    settings.PROMETHEUS_URL = operator_prometheus
    settings.GUARD_HOT_WINDOW_S = 0
    settings.GUARD_DRAIN = False
    settings.TELEMETRY_STALE_AFTER_S = 15.0
    return fake


def running_on(
    node: str, alice: User, submit: Callable[..., Job], k8s: KubernetesBackend, fake: FakeApiServer
) -> tuple[Job, str]:
    """A portal job whose one pod Volcano started on `node`; returns it and its pod's name."""
    job = submit(alice, image="nvcr.io/nvidia/pytorch:24.05-py3", kind="simulation")
    TeamQuota.objects.filter(team=job.team).update(limit=16)
    services.run_admission_cycle()
    services.dispatch(job.pk, k8s)  # (the admission cycle may have dispatched it already)
    [pod] = fake.run_pods("batch.volcano.sh", "jobs", NS, f"gp-{job.pk}", [node])
    fake.set_volcano_phase(NS, f"gp-{job.pk}", "Running")
    services.sync_jobs(k8s)
    job.refresh_from_db()
    assert job.state == JobState.RUNNING and job.placement == {node: 1}, (job.state, job.placement)
    return job, pod


def hottest(source: PrometheusTelemetry) -> Mapping[str, Mapping[int, float]]:
    return source.cycle_view(0.05).guard.hot


def unschedulable(fake: FakeApiServer, node: str) -> bool:
    found = fake.get("", "nodes", "", node)
    return found is not None and found["spec"].get("unschedulable") is True


def every_node_seen(source: PrometheusTelemetry, job: Job, left_out: str = "") -> CycleView | None:
    """The grid's view once every node, the job and (if named) an exporter no node answers for are in it."""
    view = source.cycle_view(0.05)
    nodes = set(view.guard.reporting)
    seen = nodes == {"gpu-a100-1", "gpu-a100-2", "gpu-a100-3"} and job.pk in view.jobs
    return view if seen and (not left_out or left_out in source.hosts.left_out()) else None


def test_the_guard_cordons_the_node_an_exporter_pod_runs_on_with_or_without_the_node_label(
    operator_grid: FakeApiServer,
    exporters: Exporters,
    alice: User,
    olivia: User,
    submit: Callable[..., Job],
    k8s: KubernetesBackend,
    web: Callable[[User | None], Client],
) -> None:
    fake = operator_grid
    job, pod = running_on("gpu-a100-2", alice, submit, k8s, fake)
    # On gpu-a100-2 (exporter without the node label): GPU 0 runs the portal job's pod, GPU 1 a pod
    # the portal did not start, GPU 3 is too hot. The exporter no pod answers for is hotter still.
    exporters.texts[BARE] = operator_scrape(BARE, {3: 96.0}, {0: (NS, pod), 1: ("research", "jupyter-bob-0")}, util=92.0)
    exporters.texts[GONE] = operator_scrape(GONE, {0: 99.0}, {})
    source = telemetry.source_for(telemetry.held_jobs())
    assert isinstance(source, PrometheusTelemetry)
    view = wait_for(lambda: every_node_seen(source, job, left_out=GONE))  # Prometheus scraped the new exporter too
    assert view is not None
    assert sum(view.guard.reporting.values()) == 3 * GPUS  # the unresolved exporter's GPUs are not among them
    assert set(view.jobs) == {job.pk} and view.jobs[job.pk].gpus == 1  # the other pod is no portal job

    report = telemetry.run_cycle(source)
    assert [(g.node, g.action) for g in report.guarded] == [("gpu-a100-2", "cordon")]
    assert Node.objects.get(name="gpu-a100-2").state == NodeState.CORDONED
    assert unschedulable(operator_grid, "gpu-a100-2")
    assert not Node.objects.filter(name__startswith="nvidia-dcgm-exporter").exists()  # no phantom node
    assert report.idle == []  # the job's GPU is busy: it was seen through its pod label
    assert GONE in report.unresolved and UnresolvedExporter.objects.get(name=GONE).series > 0

    # Now the node-labelled exporter's node and the one found by its pod name get hot.
    exporters.texts[RELABELLED] = operator_scrape(RELABELLED, {2: 95.0}, {})
    exporters.texts[CUSTOM] = operator_scrape(CUSTOM, {1: 97.0}, {})
    wait_for(lambda: all(max(hottest(source).get(n, {0: 0.0}).values()) > 90 for n in ("gpu-a100-1", "gpu-a100-3")))
    again = telemetry.run_cycle(source)
    assert sorted(g.node for g in again.guarded) == ["gpu-a100-1", "gpu-a100-3"]
    for node in ("gpu-a100-1", "gpu-a100-3"):
        assert Node.objects.get(name=node).state == NodeState.CORDONED
        assert unschedulable(operator_grid, node)

    # The unresolved exporter is counted on /metrics and named to operators on the dashboard.
    metrics = web(olivia).get("/metrics").content.decode()
    assert re.search(rf'gridportal_telemetry_unresolved_series_total\{{host="{GONE}"\}} [1-9]', metrics), metrics[-2000:]
    assert GONE in web(olivia).get("/").content.decode()
    page = web(alice).get("/").content.decode()
    assert 'id="telemetry-unresolved"' in page and GONE not in page  # others are told, not given the names


def test_the_node_page_history_finds_an_exporter_that_names_itself(operator_grid: FakeApiServer, exporters: Exporters) -> None:
    source = get_telemetry()
    assert isinstance(source, PrometheusTelemetry)
    # The grid's reading resolves the exporter once; a node's own samples then find its series.
    wait_for(lambda: "gpu-a100-2" in source.cycle_view(0.05).guard.reporting)
    samples = wait_for(lambda: source.samples(["gpu-a100-2"]))
    assert {s.hostname for s in samples} == {"gpu-a100-2"} and len(samples) == GPUS
