"""dcgm-exporter's text format: render the simulator's samples, parse a real scrape.

Metric and label names follow dcgm-exporter 3.x/4.x defaults (see tests/fixtures/ for a real
scrape); `Hostname` became `hostname` in 4.8, so the host label is a parameter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from cluster.simulator.model import GpuSample

DRIVER_VERSION = "580.105.08"

_METRICS: tuple[tuple[str, str, str, str], ...] = (
    # name, type, help, GpuSample attribute
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", "temperature_c"),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", "power_w"),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", "utilization"),
    ("DCGM_FI_DEV_FB_FREE", "gauge", "Frame buffer memory free (in MB).", "fb_free_mib"),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Frame buffer memory used (in MB).", "fb_used_mib"),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered.", "xid_errors"),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active.", "engine_active"),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(sample: GpuSample, host_label: str) -> str:
    pairs = [
        ("gpu", str(sample.gpu)),
        ("UUID", sample.uuid),
        ("pci_bus_id", f"00000000:{0x18 + sample.gpu * 0x10:02X}:00.0"),
        ("device", f"nvidia{sample.gpu}"),
        ("modelName", sample.model),
        (host_label, sample.hostname),
        ("DCGM_FI_DRIVER_VERSION", DRIVER_VERSION),
    ]
    if sample.portal_job_id is not None:
        pairs.append(("hpc_job", str(sample.portal_job_id)))
    return ",".join(f'{key}="{_escape(value)}"' for key, value in pairs)


def _format_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6f}"


def render(samples: Iterable[GpuSample], host_label: str = "Hostname") -> str:
    samples = list(samples)
    lines: list[str] = []
    for name, kind, help_text, attribute in _METRICS:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for sample in samples:
            lines.append(f"{name}{{{_labels(sample, host_label)}}} {_format_value(getattr(sample, attribute))}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Series:
    """One line of a Prometheus text scrape."""

    name: str
    labels: dict[str, str]
    value: float


_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> list[Series]:
    """Parse Prometheus text exposition (the subset dcgm-exporter writes)."""
    series: list[Series] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f"line {number}: not a Prometheus sample: {line[:80]!r}")
        labels = {
            key: value.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
            for key, value in _LABEL.findall(match.group("labels") or "")
        }
        series.append(Series(match.group("name"), labels, float(match.group("value"))))
    return series
