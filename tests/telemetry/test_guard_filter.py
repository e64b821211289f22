"""The thermal/XID guard decides the same from the filtered answer (hot and erroring GPUs, and per node
how many fresh GPUs reported) as from every GPU's sample; GPUs absent from the filter are cool only
when they reported."""

from __future__ import annotations

import math
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cluster import guard
from cluster.safeguards import Action, GuardMemory, NodeReading, Trip, evaluate_node, parse_thermal, thermal_floor
from cluster.simulator.model import GpuSample
from cluster.telemetry.convert import guard_view, view_of_samples
from cluster.telemetry.names import MetricNames, guard_query

TABLE = parse_thermal("85:75", "h100=87:77,l4=82:72", 20, 40)
FLOOR = thermal_floor(TABLE)
MODELS = {"n0": "", "n1": "h100", "n2": "l4", "n3": ""}
GPUS = 4
MONITORING = Path(__file__).resolve().parents[2] / "monitoring"


def sample(host: str, gpu: int, temperature: float, xid: int = 0) -> GpuSample:
    nan = math.nan
    return GpuSample(host, gpu, "", MODELS[host], nan, temperature, nan, nan, nan, nan, xid, None)


def random_cycles(rng: random.Random, count: int) -> list[list[GpuSample]]:
    """Each node: a level that changes every few cycles (cold, around the clear thresholds, hot); each
    GPU: missing (stale) sometimes, NaN rarely, an XID very rarely."""
    cycles = []
    levels = dict.fromkeys(MODELS, 60.0)
    for _ in range(count):
        out = []
        for host in MODELS:
            if rng.random() < 0.15:
                levels[host] = rng.choice([55.0, 65.0, 74.0, 80.0, 90.0])
            for gpu in range(GPUS):
                if rng.random() < 0.04:
                    continue
                temperature = math.nan if rng.random() < 0.01 else levels[host] + rng.uniform(-6, 6)
                out.append(sample(host, gpu, temperature, 79 if rng.random() < 0.0005 else 0))
        cycles.append(out)
    return cycles


def decisions(readings_per_cycle: list[dict[str, NodeReading | None]]) -> list[tuple[str, GuardMemory, Action, str]]:
    memories = {host: GuardMemory() for host in MODELS}
    out = []
    for cycle, readings in enumerate(readings_per_cycle):
        for host, reading in readings.items():
            limits = TABLE.get(MODELS[host], TABLE[""])
            memories[host], verdict = evaluate_node(memories[host], reading, limits, cycle * 10.0)
            out.append((host, memories[host], verdict.action, verdict.reason))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_the_guard_decides_the_same_from_the_filtered_answer_as_from_every_gpu(seed: int) -> None:
    rng = random.Random(seed)
    cycles = random_cycles(rng, 60)
    nodes = dict.fromkeys(MODELS, GPUS)
    full = decisions([guard.node_readings(c, nodes) for c in cycles])
    filtered = decisions([guard.view_readings(view_of_samples(c, FLOOR), nodes) for c in cycles])
    assert filtered == full
    assert Action.CORDON in {action for _, _, action, _ in full}  # the fixture acts


def test_the_random_fixtures_cordon_for_heat_and_xid_and_uncordon() -> None:
    nodes = dict.fromkeys(MODELS, GPUS)
    seen = set()
    for seed in range(40):
        for _, _, action, reason in decisions([guard.node_readings(c, nodes) for c in random_cycles(random.Random(seed), 60)]):
            seen.add((action, reason.partition(":")[0]))
    assert {(Action.CORDON, "thermal"), (Action.CORDON, "health"), (Action.UNCORDON, "thermal")} <= seen


def test_the_floor_is_the_lowest_clear_threshold() -> None:
    assert FLOOR == 72
    view = view_of_samples([sample("n0", 0, 71.9), sample("n0", 1, 72.0), sample("n0", 2, math.nan)], FLOOR)
    assert view.hot == {"n0": {1: 72.0}} and view.reporting == {"n0": 2}


def cordoned() -> GuardMemory:
    return GuardMemory(trip=Trip.THERMAL, reason="thermal: …")


def test_gpus_absent_from_the_filter_are_cool_when_every_gpu_reported() -> None:
    limits = TABLE[""]
    reading = guard.view_readings(view_of_samples([sample("n0", g, 50.0) for g in range(GPUS)], FLOOR), {"n0": GPUS})["n0"]
    assert reading == NodeReading({}, {}, GPUS, cool=GPUS)
    memory, verdict = evaluate_node(cordoned(), reading, limits, 0.0)
    memory, verdict = evaluate_node(memory, reading, limits, 40.0)
    assert verdict.action == Action.UNCORDON


def test_a_node_with_a_stale_gpu_is_not_cool_and_one_with_all_stale_decides_nothing() -> None:
    limits = TABLE[""]
    three = view_of_samples([sample("n0", g, 50.0) for g in range(GPUS - 1)], FLOOR)
    reading = guard.view_readings(three, {"n0": GPUS})["n0"]
    assert reading is not None and not reading.complete
    memory = cordoned()
    for now in (0.0, 40.0, 80.0):
        memory, verdict = evaluate_node(memory, reading, limits, now)
        assert verdict.action == Action.NONE and memory.trip == Trip.THERMAL
    assert guard.view_readings(view_of_samples([], FLOOR), {"n0": GPUS}) == {"n0": None}


def test_an_xid_on_a_cool_gpu_still_cordons_through_the_filter() -> None:
    view = view_of_samples([sample("n0", 0, 40.0), sample("n0", 1, 41.0, xid=79)], FLOOR)
    reading = guard.view_readings(view, {"n0": 2})["n0"]
    _, verdict = evaluate_node(GuardMemory(), reading, TABLE[""], 0.0)
    assert verdict.action == Action.CORDON and verdict.reason == "health: XID 79 on GPU 1"


def test_a_prometheus_answer_is_read_into_a_guard_view() -> None:
    rows = [
        {"metric": {"__name__": "gpu:temperature_c", "Hostname": "n1", "gpu": "1", "part": "hot"}, "value": [0, "90"]},
        {"metric": {"__name__": "gpu:xid_nonzero", "hostname": "n2", "gpu": "0", "part": "xid"}, "value": [0, "79"]},
        {"metric": {"Hostname": "n1", "part": "reporting"}, "value": [0, "8"]},
        {"metric": {"hostname": "n2", "part": "reporting"}, "value": [0, "7"]},
    ]
    view = guard_view(rows, MetricNames(), FLOOR)
    assert view.hot == {"n1": {1: 90.0}} and view.xid == {"n2": {0: 79}} and view.reporting == {"n1": 8, "n2": 7}


def test_a_view_asked_above_the_guards_floor_is_refused(db: None) -> None:
    with pytest.raises(ValueError, match="guard's floor"):
        guard.guard_nodes(view_of_samples([], FLOOR + 10))


def test_the_guard_query_answers_hot_xid_and_reporting_with_and_without_the_rules(tmp_path: Path) -> None:
    """promtool evaluates the query the cycle sends (recorded series, and the rules' expressions asked directly)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    names = MetricNames()
    series = [
        ('DCGM_FI_DEV_GPU_TEMP{Hostname="n1",gpu="0",modelName="A100",hpc_job="7"}', "60x10"),
        ('DCGM_FI_DEV_GPU_TEMP{Hostname="n1",gpu="1",modelName="A100",hpc_job="7"}', "90x10"),
        ('DCGM_FI_DEV_GPU_TEMP{Hostname="n2",gpu="0",modelName="A100"}', "50x10"),
        ('DCGM_FI_DEV_XID_ERRORS{Hostname="n2",gpu="0"}', "79x10"),
        ('DCGM_FI_DEV_XID_ERRORS{Hostname="n1",gpu="0"}', "0x10"),
        # Last scraped at 2m, still inside Prometheus's 5m look-back at 5m: left out by the freshness test alone.
        ('DCGM_FI_DEV_GPU_TEMP{Hostname="n3",gpu="0",modelName="A100"}', "95x2"),
    ]
    expected = [
        ('{Hostname="n1",gpu="1",modelName="A100",hpc_job="7",part="hot"}', 90),
        ('{Hostname="n2",gpu="0",part="xid"}', 79),
        ('{Hostname="n1",part="reporting"}', 2),
        ('{Hostname="n2",part="reporting"}', 1),
    ]
    named = ["gpu:temperature_c", "gpu:xid_nonzero", "", ""]
    tests = [
        {"expr": guard_query(names, FLOOR, 15), "eval_time": "5m",
         "exp_samples": [{"labels": n + labels, "value": v} for n, (labels, v) in zip(named, expected, strict=True)]},
        {"expr": guard_query(names, FLOOR, 15, recorded=False), "eval_time": "5m",
         "exp_samples": [{"labels": labels, "value": v} for labels, v in expected]},
    ]  # fmt: skip
    doc = {
        "rule_files": [str(MONITORING / "prometheus-rules.yml")],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series], "promql_expr_test": tests}],
    }
    path = tmp_path / "guard.test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=10_000))
    done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
