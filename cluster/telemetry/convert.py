"""Series (from a scrape or a Prometheus query) to per-GPU samples, with jobs attributed. Pure."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cluster.simulator.model import GpuSample
from cluster.telemetry.names import RECORDED, SAMPLE_METRICS, MetricNames

MISSING = math.nan  # a metric this exporter does not export (e.g. profiling metrics off)


@dataclass(frozen=True)
class Attribution:
    """How GPUs are tied to portal jobs when the series carry no portal id directly.

    `hpc_job`: the `hpc_job` label's value to a portal job id (Slurm writes its own job id there).
    `pod`: (namespace, pod) to a portal job id (Kubernetes pods are named after the job).
    `allocation`: (host, gpu) or (host, None) to a portal job id, from the backend's own record,
    used when the labels say nothing.
    """

    hpc_job: Callable[[str], int | None]
    pod: Callable[[str, str], int | None]
    allocation: Mapping[tuple[str, int | None], int]


def portal_hpc_job(value: str) -> int | None:
    """The simulator writes the portal job id itself into `hpc_job`."""
    return int(value) if value.isdigit() else None


def pod_pattern(pattern: str) -> Callable[[str, str], int | None]:
    """Pods named after the portal job (the Kubernetes backend names objects `gp-<id>`)."""
    compiled = re.compile(pattern)

    def resolve(namespace: str, pod: str) -> int | None:
        match = compiled.match(pod)
        return int(match.group(1)) if match else None

    return resolve


LABELS_ONLY = Attribution(portal_hpc_job, pod_pattern(r"^gp-(\d+)(?:-|$)"), {})


def attribute(
    labels: Mapping[str, str], host: str, gpu: int, names: MetricNames, how: Attribution, labelled: Container[str] = ()
) -> int | None:
    """The portal job using this GPU: from its pod or HPC job label, else from the allocation record.

    `labelled`: hosts where the exporter labels GPUs with their job; there a GPU without a label runs
    no job, so the allocation record (one job on the node) does not claim it.
    """
    pod = labels.get(names.pod_label)
    if pod:
        found = how.pod(labels.get(names.namespace_label, ""), pod)
        if found is not None:
            return found
    hpc = labels.get(names.job_label)
    if hpc:
        found = how.hpc_job(hpc)
        if found is not None:
            return found
    if host in labelled:
        return None
    return how.allocation.get((host, gpu), how.allocation.get((host, None)))


def labelled_hosts(labels: Iterable[Mapping[str, str]], names: MetricNames) -> set[str]:
    """The hosts some series of which name a job (pod or HPC job label)."""
    out = set()
    for metric in labels:
        if metric.get(names.pod_label) or metric.get(names.job_label):
            host = names.host(metric)
            if host:
                out.add(host)
    return out


@dataclass
class _Gpu:
    labels: dict[str, str]
    values: dict[str, float]


def group_by_gpu(series: Iterable[tuple[str, Mapping[str, str], float]], names: MetricNames) -> dict[tuple[str, int], _Gpu]:
    """(metric, labels, value) triples, grouped per (host, gpu index); series of unknown GPUs are dropped."""
    by_metric = {names.metric(field): attr for attr, field in SAMPLE_METRICS}
    gpus: dict[tuple[str, int], _Gpu] = {}
    for metric, labels, value in series:
        attr = by_metric.get(metric)
        host = names.host(dict(labels))
        index = labels.get(names.gpu_label, "")
        if attr is None or host is None or not index.isdigit():
            continue
        entry = gpus.setdefault((host, int(index)), _Gpu(dict(labels), {}))
        entry.values[attr] = value
        if names.job_label in labels or names.pod_label in labels:
            entry.labels.update(labels)
    return gpus


def to_samples(
    series: Iterable[tuple[str, Mapping[str, str], float]], names: MetricNames, how: Attribution = LABELS_ONLY
) -> list[GpuSample]:
    """One sample per GPU that reported a temperature; other missing metrics are NaN (XID: 0)."""
    samples = []
    gpus = group_by_gpu(series, names)
    labelled = labelled_hosts((entry.labels for entry in gpus.values()), names)
    for (host, gpu), entry in sorted(gpus.items()):
        if "temperature_c" not in entry.values:
            continue
        samples.append(_sample(host, gpu, entry, names, how, labelled))
    return samples


def _sample(host: str, gpu: int, entry: _Gpu, names: MetricNames, how: Attribution, labelled: Container[str]) -> GpuSample:
    v = entry.values
    return GpuSample(
        hostname=host,
        gpu=gpu,
        uuid=entry.labels.get(names.uuid_label, ""),
        model=entry.labels.get(names.model_label, ""),
        utilization=v.get("utilization", MISSING) * names.utilization_scale,
        temperature_c=v["temperature_c"],
        power_w=v.get("power_w", MISSING),
        fb_used_mib=v.get("fb_used_mib", MISSING) * names.memory_scale,
        fb_free_mib=v.get("fb_free_mib", MISSING) * names.memory_scale,
        engine_active=v.get("engine_active", MISSING),
        xid_errors=int(v.get("xid_errors", 0) or 0),
        portal_job_id=attribute(entry.labels, host, gpu, names, how, labelled),
    )


def recorded_samples(rows: Iterable[Mapping[str, Any]], names: MetricNames, how: Attribution = LABELS_ONLY) -> list[GpuSample]:
    """A Prometheus answer of recorded series (names.RECORDED) to one sample per GPU that reported a
    temperature, sorted by host and GPU.

    The same samples `to_samples` makes from the raw series, less what the cycle reads only for the
    nodes whose page is open (power) or never (the UUID, free memory): NaN here. A GPU with no
    recorded XID has none (0). Written for speed: it
    runs over every series of the grid (40,000 at a thousand nodes) each cycle.
    """
    column = {name: i for i, (name, _) in enumerate(RECORDED)}
    hosts, gpu_label = names.host_labels, names.gpu_label
    empty = [MISSING] * (len(RECORDED) - 1) + [0.0]
    values: dict[tuple[str, str], list[float]] = {}
    labels: dict[tuple[str, str], Mapping[str, str]] = {}
    for row in rows:
        metric = row["metric"]
        i = column.get(metric.get("__name__", ""))
        index = metric.get(gpu_label)
        host = next((metric[k] for k in hosts if metric.get(k)), None)
        if i is None or index is None or host is None:
            continue
        key = (host, index)
        found = values.get(key)
        if found is None:
            found = values[key] = empty.copy()
        found[i] = float(row["value"][1])
        if i == 0:
            labels[key] = metric
    gpus = sorted((host, int(index)) for host, index in labels if index.isdigit())
    labelled = labelled_hosts(labels.values(), names)
    return [_recorded(host, gpu, values[host, str(gpu)], labels[host, str(gpu)], names, how, labelled) for host, gpu in gpus]


def _recorded(
    host: str,
    gpu: int,
    row: list[float],
    labels: Mapping[str, str],
    names: MetricNames,
    how: Attribution,
    labelled: Container[str],
) -> GpuSample:
    temperature, utilization, fb_used, engine_active, xid = row
    return GpuSample(
        hostname=host,
        gpu=gpu,
        uuid="",
        model=labels.get(names.model_label, ""),
        utilization=utilization * names.utilization_scale,
        temperature_c=temperature,
        power_w=MISSING,
        fb_used_mib=fb_used * names.memory_scale,
        fb_free_mib=MISSING,
        engine_active=engine_active,
        xid_errors=int(xid),
        portal_job_id=attribute(labels, host, gpu, names, how, labelled),
    )


@dataclass(frozen=True)
class GuardView:
    """What the thermal/XID guard reads of one cycle, from a filtered answer (names.guard_query).

    `hot`: host -> GPU index -> °C, only the GPUs at or above the floor it was asked with;
    `xid`: host -> GPU index -> non-zero XID code; `reporting`: host -> fresh GPUs that reported a
    temperature at all. A host missing from `reporting` reported nothing fresh (stale or absent).
    """

    floor_c: float
    hot: Mapping[str, Mapping[int, float]]
    xid: Mapping[str, Mapping[int, int]]
    reporting: Mapping[str, int]


def guard_view(rows: Iterable[Mapping[str, Any]], names: MetricNames, floor_c: float) -> GuardView:
    """A Prometheus answer to names.guard_query as a GuardView."""
    hot: dict[str, dict[int, float]] = {}
    xid: dict[str, dict[int, int]] = {}
    reporting: dict[str, int] = {}
    for row in rows:
        metric = row["metric"]
        host = names.host(metric)
        if host is None:
            continue
        value = float(row["value"][1])
        part = metric.get("part")
        if part == "reporting":
            reporting[host] = reporting.get(host, 0) + int(value)
            continue
        index = metric.get(names.gpu_label, "")
        if not index.isdigit():
            continue
        if part == "hot":
            hot.setdefault(host, {})[int(index)] = value
        elif part == "xid" and int(value):
            xid.setdefault(host, {})[int(index)] = int(value)
    return GuardView(floor_c, hot, xid, reporting)


def view_of_samples(samples: Iterable[GpuSample], floor_c: float) -> GuardView:
    """The GuardView the filtered query gives for these samples (what `guard_query` asks Prometheus)."""
    hot: dict[str, dict[int, float]] = {}
    xid: dict[str, dict[int, int]] = {}
    reporting: dict[str, int] = {}
    for s in samples:
        temperature = present(s.temperature_c)
        if temperature is None:
            continue
        reporting[s.hostname] = reporting.get(s.hostname, 0) + 1
        if temperature >= floor_c:
            hot.setdefault(s.hostname, {})[s.gpu] = temperature
        if s.xid_errors:
            xid.setdefault(s.hostname, {})[s.gpu] = s.xid_errors
    return GuardView(floor_c, hot, xid, reporting)


def present(value: float) -> float | None:
    """None for a metric that was not exported, so JSON and the safeguards never see NaN."""
    return None if math.isnan(value) else value
