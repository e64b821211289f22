"""Telemetry from a real Prometheus that scrapes dcgm-exporter (instant and range queries)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException

from cluster.safeguards import EfficiencyTally
from cluster.simulator.model import GpuSample
from cluster.telemetry.convert import LABELS_ONLY, Attribution, GuardView, guard_view, recorded_samples, to_samples
from cluster.telemetry.errors import TelemetryUnavailable
from cluster.telemetry.hosts import HostResolver
from cluster.telemetry.names import (
    IDLE_LABEL,
    JOB_IDLE_READINGS,
    JOB_MEMORY,
    JOB_READINGS,
    JOB_UTILIZATION,
    RECORDED,
    MetricNames,
    fresh_only,
    guard_query,
    recording_rules,
)
from cluster.telemetry.summaries import CycleView, SummariesMissing, cycle_query, summary_view, tallies_of, view_of_samples

log = logging.getLogger(__name__)

Triple = tuple[str, Mapping[str, str], float]


class PrometheusTelemetry:
    """Samples per GPU as Prometheus last scraped them; a GPU whose data is older than `stale_after_s` is missing."""

    def __init__(
        self,
        url: str,
        names: MetricNames,
        timeout_s: float = 2.0,
        stale_after_s: float = 15.0,
        attribution: Attribution = LABELS_ONLY,
        compress: bool = False,
        hosts: HostResolver | None = None,
    ) -> None:
        # No retries: a slow Prometheus must make this cycle stale, not stall the next one.
        # `compress` False: answers uncompressed (Accept-Encoding: identity). The grid's answer is
        # ~4 MB at a thousand nodes; gzip costs Prometheus and the portal more CPU than the bytes
        # cost on a local network (PROMETHEUS_COMPRESS=true for a Prometheus across a slow link).
        headers = None if compress else {"Accept-Encoding": "identity"}
        self.client = PrometheusConnect(url=url, disable_ssl=True, timeout=timeout_s, headers=headers)
        self.names = names
        self.stale_after_s = stale_after_s
        self.attribution = attribution
        # Every answer's rows name a portal node (or are left out and counted): see telemetry/hosts.py.
        self.hosts = hosts or HostResolver(names)

    def with_attribution(self, attribution: Attribution) -> PrometheusTelemetry:
        other = object.__new__(PrometheusTelemetry)
        other.__dict__.update(self.__dict__, attribution=attribution)
        return other

    # --- queries ---------------------------------------------------------------------------

    def selector(self, hosts: list[str] | None = None) -> str:
        metrics = "|".join(self.names.all_metrics())
        if not hosts:
            return f'{{__name__=~"{metrics}"}}'
        # Exporters that name themselves (the GPU Operator's pods) are asked for by their own name too.
        wanted = "|".join(_regex_escape(h) for h in (*hosts, *self.hosts.aliases(hosts)))
        # The host label's name differs between exporter versions: ask for each.
        return " or ".join(f'{{__name__=~"{metrics}",{label}=~"{wanted}"}}' for label in self.names.host_labels)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        try:
            result = getattr(self.client, method)(*args, **kwargs)
        except (requests.RequestException, PrometheusApiClientException, ValueError) as exc:
            raise TelemetryUnavailable(f"Prometheus {method} failed: {exc}") from exc
        return self.hosts.resolve(result)

    def samples(self, hosts: list[str] | None = None, at: datetime | None = None) -> list[GpuSample]:
        """The grid's samples (`hosts` None) from the recorded series; a few hosts' from the raw series."""
        moment = at or datetime.now(UTC)
        if hosts is None:
            return self.grid_samples(moment)
        params = {"time": moment.timestamp()}
        vector = self._call("custom_query", self.selector(hosts), params=params)
        ages = self._call("custom_query", f"timestamp({self.names.temperature})", params=params)
        fresh = self._fresh_gpus(ages, moment.timestamp())
        return [s for s in to_samples(_triples(vector), self.names, self.attribution) if (s.hostname, s.gpu) in fresh]

    def grid_samples(self, moment: datetime, only: tuple[str, ...] | None = None) -> list[GpuSample]:
        """Every GPU's sample from the recorded series (monitoring/prometheus-rules.yml), stale GPUs left out.

        One answer of one small series per GPU and metric, instead of every raw series with all its
        labels. Where the rules are not loaded (no recorded temperature at all), the same expressions
        are asked directly, one query each. `only`: these recorded series alone (the heat map reads
        the temperature and the utilisation); the others are NaN.
        """
        params = {"time": moment.timestamp()}
        wanted = "|".join(name for name, _ in RECORDED if only is None or name in only)
        rows = self._call("custom_query", fresh_only(f'{{__name__=~"{wanted}"}}', self.names, self.stale_after_s), params=params)
        if not any(row["metric"].get("__name__") == RECORDED[0][0] for row in rows):
            log.warning("Prometheus has no recorded GPU temperature (rules not loaded, or every GPU stale): asking raw series")
            rows = self.direct(params)
        return recorded_samples(rows, self.names, self.attribution)

    def heat_samples(self, at: datetime | None = None) -> list[GpuSample]:
        """Every GPU's temperature and utilisation: what the dashboard's heat map shows."""
        return self.grid_samples(at or datetime.now(UTC), only=(RECORDED[0][0], RECORDED[1][0]))

    def guard_view(self, floor_c: float, at: datetime | None = None) -> GuardView:
        """What the thermal/XID guard needs (names.guard_query): hot and erroring GPUs, and per node
        how many fresh GPUs reported; a few hundred series for a thousand nodes, not one per GPU.
        Without the recording rules (nothing reported), the rules' expressions are asked directly."""
        params = {"time": (at or datetime.now(UTC)).timestamp()}
        rows = self._call("custom_query", guard_query(self.names, floor_c, self.stale_after_s), params=params)
        if not rows:
            log.warning("Prometheus has no recorded GPU temperature (rules not loaded, or every GPU stale): asking raw series")
            rows = self._call("custom_query", guard_query(self.names, floor_c, self.stale_after_s, recorded=False), params=params)
        return guard_view(rows, self.names, floor_c)

    def cycle_view(self, threshold: float, at: datetime | None = None) -> CycleView:
        """What one cycle decides from, read from the recorded summaries (names.summary_rules): a few
        series per node and per job. Without them (rules not loaded, or written for another idle
        threshold), from every GPU's sample, which costs more at a thousand nodes."""
        moment = at or datetime.now(UTC)
        rows = self._call("custom_query", cycle_query(), params={"time": moment.timestamp()})
        try:
            return summary_view(rows, self.names, self.attribution, threshold, moment.timestamp(), self.stale_after_s)
        except SummariesMissing as exc:
            log.warning("%s: reading every GPU instead", exc)
            return view_of_samples(self.samples(None, moment), threshold)

    def tallies(self, threshold: float, start: datetime, end: datetime) -> dict[int, EfficiencyTally]:
        """Per job, its efficiency sums over (start, end]: every recorded summary in the window (one per
        rule evaluation), not one sample per cycle. Nothing where no summaries were recorded then."""
        # A millisecond short of the window: Prometheus 2 includes both ends of a range, and back-to-back
        # windows must not share the sample on their boundary.
        window_ms = max(1, round((end - start).total_seconds() * 1000) - 1)
        label = f'{{{IDLE_LABEL}="{threshold:g}"}}'
        parts = ((JOB_READINGS, "sum"), (JOB_UTILIZATION, "sum"), (JOB_IDLE_READINGS, "sum"), (JOB_MEMORY, "max"))
        query = " or ".join(
            f'label_replace({how}_over_time({name}{label}[{window_ms}ms]), "tally", "{name}", "", "")' for name, how in parts
        )
        rows = self._call("custom_query", query, params={"time": end.timestamp()})
        return tallies_of(rows, self.names, self.attribution)

    def direct(self, params: dict[str, float]) -> list[dict[str, Any]]:
        """The recording rules' expressions asked directly (their answers named as the rules would)."""
        rows: list[dict[str, Any]] = []
        for name, expr in recording_rules(self.names).items():
            query = fresh_only(expr, self.names, self.stale_after_s, recorded=False)
            for row in self._call("custom_query", query, params=params):
                row["metric"]["__name__"] = name
                rows.append(row)
        return rows

    def _fresh_gpus(self, ages: list[dict[str, Any]], now: float) -> set[tuple[str, int]]:
        fresh = set()
        for row in ages:
            labels = row.get("metric", {})
            host, gpu = self.names.host(labels), labels.get(self.names.gpu_label, "")
            if host and gpu.isdigit() and now - float(row["value"][1]) <= self.stale_after_s:
                fresh.add((host, int(gpu)))
        return fresh

    def history(self, hosts: list[str], start: datetime, end: datetime, step_s: float) -> list[tuple[datetime, list[GpuSample]]]:
        matrix = self._call("custom_query_range", self.selector(hosts), start_time=start, end_time=end, step=f"{step_s:g}s")
        by_time: dict[float, list[Triple]] = defaultdict(list)
        for row in matrix:
            labels = row.get("metric", {})
            name = labels.get("__name__", "")
            for t, value in row.get("values", []):
                by_time[float(t)].append((name, labels, float(value)))
        return [
            (datetime.fromtimestamp(t, UTC), to_samples(triples, self.names, self.attribution))
            for t, triples in sorted(by_time.items())
        ]


def _triples(vector: Iterable[dict[str, Any]]) -> list[Triple]:
    return [(row["metric"].get("__name__", ""), row["metric"], float(row["value"][1])) for row in vector]


def _regex_escape(value: str) -> str:
    # PromQL strings use RE2; escape regex metacharacters, then the backslashes for the string literal.
    special = set(".^$*+?()[]{}|\\")
    escaped = "".join("\\" + c if c in special else c for c in value)
    return escaped.replace("\\", "\\\\").replace('"', '\\"')
