"""A real dcgm-exporter scrape (tests/fixtures/dcgm, with its provenance) through the parser and the converter."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cluster import dcgm
from cluster.simulator.backend import SimulatorBackend
from cluster.simulator.model import GpuSample
from cluster.telemetry.convert import LABELS_ONLY, Attribution, attribute, pod_pattern, present, to_samples
from cluster.telemetry.names import MetricNames, NamesError, parse_names

SCRAPE = Path(__file__).resolve().parents[1] / "fixtures" / "dcgm" / "dcgm-exporter-scrape-l4.prom"


def triples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for s in dcgm.parse(text)]


def test_the_provenance_travels_with_the_real_scrape() -> None:
    readme = (SCRAPE.parent / "README.md").read_text()
    assert SCRAPE.name in readme and "real" in readme


def test_the_real_l4_scrape_becomes_one_gpu_sample() -> None:
    (sample,) = to_samples(triples(SCRAPE.read_text()), MetricNames())
    assert sample.hostname == "i-030791dc5a37cd257" and sample.gpu == 0
    assert sample.model == "NVIDIA L4" and sample.uuid == "GPU-c2f76b33-7953-256e-8f33-1343419b1a1c"
    assert sample.temperature_c == 31 and sample.utilization == 0 and sample.power_w == pytest.approx(16.365)
    assert sample.fb_used_mib == 0 and sample.fb_free_mib == 22563 and sample.engine_active == 0.0
    assert sample.xid_errors == 0  # the exporter's default list does not export XIDs here: no error
    assert sample.portal_job_id is None


def test_exporter_48_lowercase_hostname_and_49_units_are_configurable() -> None:
    text = SCRAPE.read_text().replace("Hostname=", "hostname=").replace("DCGM_FI_DEV_GPU_UTIL{", "DCGM_FI_DEV_GPU_UTIL_RATIO{")
    text = text.replace('DCGM_FI_DRIVER_VERSION="580.105.08"} 22563', 'DCGM_FI_DRIVER_VERSION="580.105.08"} 23659020288')
    names = parse_names("utilization=DCGM_FI_DEV_GPU_UTIL_RATIO,utilization_scale=100,memory_scale=9.5367431640625e-07")
    (sample,) = to_samples(triples(text), names)
    assert sample.hostname == "i-030791dc5a37cd257"  # found under either host label
    assert sample.fb_free_mib == pytest.approx(22563)
    only_upper = parse_names("host_labels=Hostname")
    assert to_samples(triples(text), only_upper) == []


def test_the_simulators_own_render_round_trips(grid: SimulatorBackend) -> None:
    from cluster.simulator.telemetry import SimulatorTelemetry

    rendered = SimulatorTelemetry().samples()
    parsed = to_samples(triples(dcgm.render(rendered)), MetricNames())
    assert [(s.hostname, s.gpu, s.temperature_c, s.portal_job_id) for s in parsed] == [
        (s.hostname, s.gpu, s.temperature_c, s.portal_job_id) for s in sorted(rendered, key=lambda s: (s.hostname, s.gpu))
    ]


def test_a_missing_profiling_metric_is_nan_in_the_sample_and_none_outside() -> None:
    text = "\n".join(line for line in SCRAPE.read_text().splitlines() if "GR_ENGINE_ACTIVE" not in line)
    (sample,) = to_samples(triples(text), MetricNames())
    assert math.isnan(sample.engine_active) and present(sample.engine_active) is None


def test_a_gpu_without_temperature_is_not_reported() -> None:
    text = "\n".join(line for line in SCRAPE.read_text().splitlines() if not line.startswith("DCGM_FI_DEV_GPU_TEMP"))
    assert to_samples(triples(text), MetricNames()) == []


@pytest.mark.parametrize("text", ["nonsense", "temperature=", "host_labels", "utilization_scale=abc"])
def test_bad_name_overrides_are_refused(text: str) -> None:
    with pytest.raises(NamesError):
        parse_names(text)


def test_attribution_prefers_pod_then_hpc_job_then_the_allocation_record() -> None:
    names = MetricNames()
    how = Attribution(lambda v: {"9001": 7}.get(v), pod_pattern(r"^gp-(\d+)(?:-|$)"), {("n1", None): 5, ("n2", 3): 6})
    assert attribute({"pod": "gp-12-worker-0", "namespace": "team-vision", "hpc_job": "9001"}, "n1", 0, names, how) == 12
    assert attribute({"pod": "unrelated", "hpc_job": "9001"}, "n1", 0, names, how) == 7
    assert attribute({"hpc_job": "unknown"}, "n1", 0, names, how) == 5
    assert attribute({}, "n2", 3, names, how) == 6
    assert attribute({}, "n2", 2, names, how) is None
    assert attribute({"hpc_job": "42"}, "n9", 0, names, LABELS_ONLY) == 42


def test_samples_keep_the_gpu_sample_shape() -> None:
    assert set(GpuSample.__dataclass_fields__) >= {"temperature_c", "utilization", "engine_active", "portal_job_id"}
