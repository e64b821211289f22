"""The metric and label names (and units) the portal reads from dcgm-exporter, configurable.

dcgm-exporter renamed its host label from `Hostname` to `hostname` in 4.8, and 4.9 renames default
metrics and changes units (utilisation as a 0-1 ratio, memory in bytes). Every name and scale is
therefore a setting (TELEMETRY_NAMES), with the 3.x-4.8 defaults below.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    # The first one present wins: the node Prometheus adds when it scrapes a Kubernetes DaemonSet
    # (relabelled from __meta_kubernetes_pod_node_name), then the exporter's own `Hostname`, which
    # under the GPU Operator is the exporter pod's name (telemetry/hosts.py maps it to its node).
    host_labels: tuple[str, ...] = ("node", "kubernetes_node", "Hostname", "hostname")
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

    def host(self, labels: Mapping[str, str]) -> str | None:
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


# --- summaries: what one telemetry cycle decides from, per node and per job ------------------------

# Recorded by the rules below (group SUMMARY_GROUP), so a cycle reads a few thousand small series at
# a thousand nodes instead of every GPU's, and Prometheus computes nothing when it is asked: every
# aggregation, join and filter runs at rule evaluation, off the cycle's path.
SUMMARY_GROUP = "gpu-grid-portal-summaries"
LOADED = "portal:summaries:loaded"  # one series; its labels say which idle threshold the rules were written for
NODE_HOTTEST = "node:gpu_temperature_c:hottest"  # per node, the hottest GPU (its `gpu` label) and its °C
NODE_REPORTING = "node:gpus_reporting:count"  # per node, GPUs that reported a temperature
NODE_XID = "node:gpu_xid:nonzero"  # per GPU with a non-zero XID
JOB_GPU_TEMPERATURE = "job_gpu:temperature_c"  # per GPU, with its job's labels (read by the rules below)
JOB_GPU_ACTIVITY = "job_gpu:activity"  # per GPU: engine-active ratio, else utilisation / 100
JOB_GPU_READING = "job_gpu:reading_utilization"  # per GPU with activity, utilisation and memory: its utilisation
JOB_GPUS = "job:gpus:count"  # per job and host, GPUs reporting; `state`: idle | busy | partial
JOB_READINGS = "job:readings:count"  # per job and host, GPUs with activity, utilisation and memory
JOB_UTILIZATION = "job:utilization:sum"  # their utilisation (%), summed
JOB_IDLE_READINGS = "job:idle_readings:count"  # those whose activity is below the idle threshold
JOB_MEMORY = "job:fb_used:max"  # the most frame-buffer memory (MiB) one of them used
JOB_TALLIES = (JOB_READINGS, JOB_UTILIZATION, JOB_IDLE_READINGS, JOB_MEMORY)
CYCLE_SERIES = (LOADED, NODE_HOTTEST, NODE_REPORTING, NODE_XID, JOB_GPUS)
IDLE_LABEL = "idle_below"


@dataclass(frozen=True)
class Rule:
    record: str
    expr: str
    labels: tuple[tuple[str, str], ...] = ()


def _scaled(expr: str, scale: float) -> str:
    return expr if scale == 1 else f"({expr}) * {scale:g}"


def summary_rules(names: MetricNames, idle_threshold: float) -> list[Rule]:
    """The per-node and per-job summaries one cycle reads, for these names and idle threshold.

    A job is keyed by its host and its attribution labels (`hpc_job`, `pod`, `namespace`), as the
    portal attributes a GPU (cluster.telemetry.convert.attribute): a job on several nodes has one
    series per node, which the portal adds up. A GPU's activity is its engine-active ratio, else
    its utilisation / 100 (cluster.safeguards.activity). A job is `partial` when one of its GPUs
    reported a temperature but no activity (a gap: no idle decision), else `idle` when every GPU's
    activity is below the threshold, else `busy`. The threshold is written into the rules (label
    `idle_below`); the portal reads only summaries written for its own IDLE_THRESHOLD.
    """
    hosts = ", ".join(names.host_labels)
    gpu = f"{hosts}, {names.gpu_label}"
    job = ", ".join((*names.host_labels, names.job_label, names.pod_label, names.namespace_label))
    per_gpu = f"{job}, {names.gpu_label}"
    util = _scaled(f"max by ({per_gpu}) ({names.utilization})", names.utilization_scale)
    memory = _scaled(f"max by ({per_gpu}) ({names.fb_used})", names.memory_scale)
    threshold = f"{idle_threshold:g}"
    idle = ((IDLE_LABEL, threshold),)
    # Per GPU with its job's labels, evaluated once and read by the rules after them (a group's rules
    # run in order at one evaluation time, each seeing the ones before).
    reporting = f"count by ({job}) ({JOB_GPU_TEMPERATURE})"
    complete = f"(count by ({job}) ({JOB_GPU_ACTIVITY}) == on ({job}) {reporting})"
    most_active = f"max by ({job}) ({JOB_GPU_ACTIVITY})"

    def state(name: str) -> tuple[tuple[str, str], ...]:
        return (("state", name), *idle)

    return [
        Rule(LOADED, "vector(1)", idle),
        Rule(NODE_HOTTEST, f"topk by ({hosts}) (1, max by ({gpu}) ({names.temperature}))"),
        Rule(NODE_REPORTING, f"count by ({hosts}) (max by ({gpu}) ({names.temperature}))"),
        Rule(NODE_XID, f"max by ({gpu}) ({names.xid}) != 0"),
        Rule(JOB_GPU_TEMPERATURE, f"max by ({per_gpu}) ({names.temperature})"),
        Rule(JOB_GPU_ACTIVITY, f"max by ({per_gpu}) ({names.engine_active}) or on ({gpu}) {util} / 100"),
        Rule(JOB_GPU_READING, f"{util} and on ({gpu}) {JOB_GPU_ACTIVITY} and on ({gpu}) {memory}"),
        Rule(JOB_GPUS, f"{reporting} unless on ({job}) {complete}", state("partial")),
        Rule(JOB_GPUS, f"{reporting} and on ({job}) {complete} and on ({job}) ({most_active} < {threshold})", state("idle")),
        Rule(JOB_GPUS, f"{reporting} and on ({job}) {complete} and on ({job}) ({most_active} >= {threshold})", state("busy")),
        Rule(JOB_READINGS, f"count by ({job}) ({JOB_GPU_READING})", idle),
        Rule(JOB_UTILIZATION, f"sum by ({job}) ({JOB_GPU_READING})", idle),
        Rule(JOB_IDLE_READINGS, f"count by ({job}) ({JOB_GPU_ACTIVITY} < {threshold} and on ({gpu}) {JOB_GPU_READING})", idle),
        Rule(JOB_MEMORY, f"max by ({job}) ({memory} and on ({gpu}) {JOB_GPU_READING})", idle),
    ]
