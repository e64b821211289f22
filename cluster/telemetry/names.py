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


# --- what the portal asks Prometheus for ---------------------------------------------------------

# Recorded series (monitoring/prometheus-rules.yml) -> GpuSample attribute. One series per GPU and
# metric with only the labels the portal reads, so the whole grid's answer is a fraction of the raw
# series' (dcgm-exporter puts ten labels on each); XID codes come only for GPUs that have one. Power
# is read by the node pages alone: the cycle asks the raw series of the nodes whose page is open.
RECORDED: tuple[tuple[str, str], ...] = (
    ("gpu:temperature_c", "temperature_c"),
    ("gpu:utilization", "utilization"),
    ("gpu:fb_used", "fb_used_mib"),
    ("gpu:engine_active", "engine_active"),
    ("gpu:xid_nonzero", "xid_errors"),
)
RECORDED_GROUP = "gpu-grid-portal"


def recording_rules(names: MetricNames) -> dict[str, str]:
    """The PromQL of each recorded series, for these metric and label names (the shipped file uses the defaults)."""
    gpu = ", ".join((*names.host_labels, names.gpu_label))
    # Attribution and model ride on the temperature only: one copy of them per GPU is enough.
    ident = ", ".join((gpu, names.model_label, names.job_label, names.pod_label, names.namespace_label))
    return {
        "gpu:temperature_c": f"max by ({ident}) ({names.temperature})",
        "gpu:utilization": f"max by ({gpu}) ({names.utilization})",
        "gpu:fb_used": f"max by ({gpu}) ({names.fb_used})",
        "gpu:engine_active": f"max by ({gpu}) ({names.engine_active})",
        "gpu:xid_nonzero": f"max by ({gpu}) ({names.xid}) != 0",
    }


def fresh_only(expr: str, names: MetricNames, stale_after_s: float, recorded: bool = True) -> str:
    """`expr` less the GPUs whose temperature was scraped (or, `recorded`, recorded) more than
    `stale_after_s` ago: a stale GPU is missing, so it decides nothing. Asked in the same query, so
    freshness costs no second answer."""
    gpu = ", ".join((*names.host_labels, names.gpu_label))
    ages = [names.temperature, *(["gpu:temperature_c"] if recorded else [])]
    # `timestamp(…) < time() - S`: one comparison with a scalar per series, no subtraction per series.
    old = " or ".join(f"timestamp({metric}) < time() - {stale_after_s:g}" for metric in ages)
    return f"({expr}) unless on ({gpu}) ({old})"


def guard_query(names: MetricNames, floor_c: float, stale_after_s: float, recorded: bool = True) -> str:
    """What the thermal/XID guard needs, in one answer of a few series instead of one per GPU:

    - `part="hot"`: the fresh GPUs at or above `floor_c` (the lowest clear threshold, see
      cluster.safeguards.thermal_floor), with their temperature; cooler GPUs decide nothing by value;
    - `part="xid"`: the fresh GPUs with a non-zero XID (and a temperature, as a sample needs);
    - `part="reporting"`: per node, how many fresh GPUs reported a temperature, so that a node whose
      GPUs are all absent from "hot" is known cool, and a node with stale GPUs is not.

    `recorded` False: the rules' expressions asked directly (Prometheus without the rules).
    """
    rules = recording_rules(names)
    gpu = ", ".join((*names.host_labels, names.gpu_label))
    hosts = ", ".join(names.host_labels)
    temp = "gpu:temperature_c" if recorded else f"({rules['gpu:temperature_c']})"
    xid = "gpu:xid_nonzero" if recorded else f"({rules['gpu:xid_nonzero']})"
    reported = f"{temp} >= -Inf"  # NaN is no reading (a filter, not a join of the series with themselves)

    def fresh(expr: str) -> str:
        return fresh_only(expr, names, stale_after_s, recorded=recorded)

    parts = {
        "hot": fresh(f"{temp} >= {floor_c:g}"),
        "xid": fresh(f"{xid} and on ({gpu}) ({reported})"),
        "reporting": f"count by ({hosts}) ({fresh(reported)})",
    }
    return " or ".join(f'label_replace({expr}, "part", "{part}", "", "")' for part, expr in parts.items())
