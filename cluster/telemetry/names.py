"""The metric and label names (and units) the portal reads from dcgm-exporter, configurable.

dcgm-exporter renamed its host label from `Hostname` to `hostname` in 4.8, and 4.9 renames default
metrics and changes units (utilisation as a 0-1 ratio, memory in bytes). Every name and scale is
therefore a setting (TELEMETRY_NAMES), with the 3.x-4.8 defaults below.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

# GpuSample attribute -> field of MetricNames naming the metric that feeds it
SAMPLE_METRICS: tuple[tuple[str, str], ...] = (
    ("temperature_c", "temperature"),
    ("utilization", "utilization"),
    ("fb_used_mib", "fb_used"),
    ("fb_free_mib", "fb_free"),
    ("power_w", "power"),
    ("engine_active", "engine_active"),
    ("xid_errors", "xid"),
)


@dataclass(frozen=True)
class MetricNames:
    """Names of the series and labels, and the factors that bring values to the portal's units."""

    temperature: str = "DCGM_FI_DEV_GPU_TEMP"
    utilization: str = "DCGM_FI_DEV_GPU_UTIL"
    fb_used: str = "DCGM_FI_DEV_FB_USED"
    fb_free: str = "DCGM_FI_DEV_FB_FREE"
    power: str = "DCGM_FI_DEV_POWER_USAGE"
    engine_active: str = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
    xid: str = "DCGM_FI_DEV_XID_ERRORS"
    host_labels: tuple[str, ...] = ("Hostname", "hostname")  # the first one present wins
    gpu_label: str = "gpu"
    uuid_label: str = "UUID"
    model_label: str = "modelName"
    pod_label: str = "pod"
    namespace_label: str = "namespace"
    job_label: str = "hpc_job"
    utilization_scale: float = 1.0  # 100 when the exporter reports a 0-1 ratio
    memory_scale: float = 1.0  # 1/1048576 when the exporter reports bytes

    def metric(self, field: str) -> str:
        return str(getattr(self, field))

    def all_metrics(self) -> list[str]:
        return [self.metric(field) for _, field in SAMPLE_METRICS]

    def host(self, labels: dict[str, str]) -> str | None:
        return next((labels[key] for key in self.host_labels if labels.get(key)), None)


class NamesError(ValueError):
    """TELEMETRY_NAMES could not be parsed."""


def parse_names(text: str) -> MetricNames:
    """`key=value,…` overrides of the defaults, e.g. `host_labels=hostname,utilization_scale=100`."""
    known = {f.name: f for f in fields(MetricNames)}
    changes: dict[str, Any] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in known or not value:
            raise NamesError(f"TELEMETRY_NAMES entry {item!r}: expected one of {', '.join(sorted(known))} = a value")
        changes[key] = _convert(key, value)
    return replace(MetricNames(), **changes)


def _convert(key: str, value: str) -> Any:
    if key == "host_labels":
        return tuple(v for v in value.split("|") if v)
    if key.endswith("_scale"):
        try:
            return float(value)
        except ValueError:
            raise NamesError(f"TELEMETRY_NAMES {key}={value!r}: expected a number") from None
    return value
