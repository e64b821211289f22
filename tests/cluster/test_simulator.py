"""The simulated grid: pools, job outcomes, telemetry dynamics, dcgm-exporter format, node operations."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from cluster import dcgm
from cluster import services as cluster_services
from cluster.backends.base import BackendRejected, DrainReport, JobRequest, RemoteJob, RemoteJobState
from cluster.gpus import GPU_MODELS
from cluster.models import SimJob, SimNode
from cluster.simulator.backend import SimulatorBackend
from cluster.simulator.model import (
    AMBIENT_C,
    BusySpan,
    PoolSpecError,
    decide_outcome,
    gpu_sample,
    log_lines,
    parse_pools,
    temperature,
)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "dcgm" / "dcgm-exporter-scrape-l4.prom"


def request(portal_id: int, gpus: int = 1, nodes: int = 1, node_names: tuple[str, ...] = ()) -> JobRequest:
    return JobRequest(
        portal_job_id=portal_id, name=f"j{portal_id}", kind="training", team="t", user="u", gpu_model="a100",
        gpus_per_node=gpus, nodes=nodes, node_names=node_names, walltime_s=600, image="img", command=("python",),
    )  # fmt: skip


def test_pools_parse_and_bad_specs_say_what_is_wrong() -> None:
    pools = parse_pools("p:onprem:a100:2x8, q:cloud:a10g:0x4")
    assert [(p.name, p.nodes, p.gpus_per_node) for p in pools] == [("p", 2, 8), ("q", 0, 4)]
    assert pools[0].node_names() == ["p-01", "p-02"]
    for bad in [
        "p:onprem:a100",
        "p:moon:a100:1x8",
        "p:onprem:b300:1x8",
        "p:onprem:a100:1x99",
        "p:onprem:a100:1x8,p:onprem:a100:1x8",
    ]:
        with pytest.raises(PoolSpecError):
            parse_pools(bad)


def test_outcomes_are_decided_by_the_job_id_alone() -> None:
    assert decide_outcome(42, 3600, 0.5) == decide_outcome(42, 3600, 0.5)
    outcomes = [decide_outcome(i, 3600, 0.2) for i in range(2000)]
    failed = sum(o.state == "failed" for o in outcomes) / len(outcomes)
    assert 0.15 < failed < 0.25
    assert all(o.runtime_s <= 3600 for o in outcomes)
    assert all(o.exit_code != 0 or o.reason == "TimeLimit" for o in outcomes if o.state == "failed")


def test_temperature_follows_load_with_a_lag_and_cools_back() -> None:
    span = [BusySpan(start=1000, end=1300, load=1.0, memory_fraction=0.5, portal_job_id=1)]
    before, early, late, after = (temperature(span, t, None) for t in (999, 1005, 1290, 1500))
    assert abs(before - AMBIENT_C) < 0.5
    assert before < early < late
    assert late > AMBIENT_C + 35
    assert after < late - 20


def test_an_overheating_node_runs_hotter_than_its_load_explains() -> None:
    span = [BusySpan(0, None, 0.9, 0.5, 1)]
    normal = temperature(span, 500, None)
    hot = temperature(span, 500, overheat_since=100)
    assert hot - normal > 30


def test_a_busy_gpu_reports_its_job_and_plausible_units() -> None:
    model = GPU_MODELS["a100"]
    busy = gpu_sample(model, "n1", 0, 100.0, [BusySpan(0, None, 0.9, 0.5, 7)])
    idle = gpu_sample(model, "n1", 1, 100.0, [])
    assert busy.portal_job_id == 7 and idle.portal_job_id is None
    assert 80 <= busy.utilization <= 100 and idle.utilization == 0
    assert busy.fb_used_mib + busy.fb_free_mib == pytest.approx(model.memory_mib, abs=1)
    assert model.idle_w <= idle.power_w < busy.power_w <= model.tdp_w


def test_logs_grow_with_progress_and_end_with_the_outcome() -> None:
    assert len(log_lines("training", "j", 1, 0.5, None)) < len(log_lines("training", "j", 1, 1.0, None))
    assert log_lines("rendering", "j", 1, 1.0, "finished: exit code 0")[-1].endswith("exit code 0")


def test_the_rendered_scrape_parses_with_the_real_exporters_names() -> None:
    sample = gpu_sample(GPU_MODELS["h100"], "gpu-h100-01", 3, 10.0, [BusySpan(0, None, 0.5, 0.5, 99)])
    series = dcgm.parse(dcgm.render([sample]))
    real_names = {s.name for s in dcgm.parse(FIXTURE.read_text())}
    ours = {s.name for s in series}
    assert {"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_POWER_USAGE"} <= ours & real_names
    temp = next(s for s in series if s.name == "DCGM_FI_DEV_GPU_TEMP")
    assert temp.labels["Hostname"] == "gpu-h100-01" and temp.labels["gpu"] == "3" and temp.labels["hpc_job"] == "99"
    assert temp.labels["modelName"] == "NVIDIA H100 80GB HBM3"
    assert dcgm.parse(dcgm.render([sample], host_label="hostname"))[0].labels["hostname"] == "gpu-h100-01"


def test_the_real_scrape_parses_with_its_labels() -> None:
    series = dcgm.parse(FIXTURE.read_text())
    temp = next(s for s in series if s.name == "DCGM_FI_DEV_GPU_TEMP")
    assert temp.labels["modelName"] == "NVIDIA L4" and temp.labels["Hostname"].startswith("i-")
    assert temp.value == 31


def found(grid: SimulatorBackend, portal_job_id: int) -> RemoteJob:
    remote = grid.find_job(portal_job_id)
    assert remote is not None
    return remote


def test_a_job_runs_on_requested_nodes_and_a_repeated_submit_is_the_same_job(grid: SimulatorBackend) -> None:
    first = grid.submit(request(1, gpus=4, node_names=("onprem-a100-02",)))
    again = grid.submit(request(1, gpus=4, node_names=("onprem-a100-02",)))
    assert first == again
    assert SimJob.objects.count() == 1
    remote = grid.find_job(1)
    assert remote is not None
    assert remote.state == RemoteJobState.RUNNING and remote.node_names == ("onprem-a100-02",)


def test_a_job_that_does_not_fit_waits_and_starts_when_gpus_free_up(grid: SimulatorBackend) -> None:
    grid.submit(request(1, gpus=8, node_names=("onprem-a100-01",)))
    grid.submit(request(2, gpus=1, node_names=("onprem-a100-01",)))
    assert found(grid, 2).state == RemoteJobState.PENDING
    SimJob.objects.filter(portal_job_id=1).update(ends_at=timezone.now() - timedelta(seconds=1))
    assert found(grid, 1).state == RemoteJobState.SUCCEEDED
    assert found(grid, 2).state == RemoteJobState.RUNNING


def test_drain_cordon_resume_and_unknown_nodes(grid: SimulatorBackend) -> None:
    grid.drain("onprem-a100-01", "memory errors")
    grid.cordon("onprem-a100-02", "maintenance")
    states = {n.name: (n.state, n.reason) for n in grid.list_nodes()}
    assert states["onprem-a100-01"] == ("draining", "memory errors")
    assert states["onprem-a100-02"] == ("cordoned", "maintenance")
    grid.resume("onprem-a100-01")
    assert {n.name: n.state for n in grid.list_nodes()}["onprem-a100-01"] == "ready"
    with pytest.raises(BackendRejected, match="no node called"):
        grid.cordon("nope", "x")


def test_a_drain_evicts_nothing_so_its_stored_report_is_empty_and_complete(grid: SimulatorBackend) -> None:
    assert grid.drain("onprem-a100-02", "fan") == DrainReport("onprem-a100-02")
    node = cluster_services.drain("onprem-a100-01", "olivia", "memory errors")
    assert cluster_services.last_drain_report(node) == {"evicted": [], "blocked": {}, "skipped": []}


def test_a_cloud_pool_scales_up_and_down_but_keeps_busy_nodes_until_they_drain(grid: SimulatorBackend) -> None:
    grid.scale_pool("burst-a10g", 2)
    assert sorted(SimNode.objects.filter(pool="burst-a10g").values_list("name", flat=True)) == ["burst-a10g-01", "burst-a10g-02"]
    grid.submit(JobRequest(9, "j", "custom", "t", "u", "a10g", 1, 1, ("burst-a10g-02",), 600, "img", ("x",)))
    grid.scale_pool("burst-a10g", 0)
    left = SimNode.objects.get(pool="burst-a10g")
    assert (left.name, left.state) == ("burst-a10g-02", "draining")
    with pytest.raises(BackendRejected):
        grid.scale_pool("onprem-a100", 5)


def test_a_node_going_down_fails_its_jobs(grid: SimulatorBackend) -> None:
    grid.submit(request(1, gpus=2, node_names=("onprem-a100-01",)))
    grid.inject_fault("onprem-a100-01", "down")
    remote = grid.find_job(1)
    assert remote is not None
    assert remote.state == RemoteJobState.FAILED and remote.reason == "NodeFail"
    grid.clear_fault("onprem-a100-01")
    assert {n.name: n.state for n in grid.list_nodes()}["onprem-a100-01"] == "ready"


@pytest.mark.parametrize(
    ("script", "fails"),
    [
        ("#!/bin/bash\necho hello\n", False),
        ("#!/bin/bash\nif true; then\n  echo unclosed\n", True),
        ("#!/bin/bash\r\nfor i in 1 2; do\r\n  echo $i\r\ndone\r\n", True),  # CRLF: bash reads 'do\r'
    ],
)
def test_a_script_bash_would_refuse_fails_in_the_simulator_too(grid: SimulatorBackend, script: str, fails: bool) -> None:
    from dataclasses import replace

    grid.submit(replace(request(7, gpus=1), script=script))
    job = SimJob.objects.get(portal_job_id=7)
    assert (job.outcome_state == "failed" and job.outcome_reason.startswith("script: bash -n:")) is fails


def test_the_log_follows_the_jobs_own_arguments() -> None:
    training = log_lines("training", "j", 1, 1.0, None, ["torchrun", "train.py", "--epochs=3"])
    assert "epoch 3/3" in training[-1] and not any("/10 " in line for line in training)
    frames = log_lines("rendering", "j", 1, 1.0, None, ["blender", "-b", "s.blend", "-s", "101", "-e", "110", "-a"])
    numbers = [int(line.split()[0][4:]) for line in frames[1:]]
    assert min(numbers) == 101 and max(numbers) == 110
    assert "of 2000" in log_lines("simulation", "j", 1, 0.5, None, ["gmx", "mdrun", "-nsteps", "2000"])[-1]
