"""The portal's own metrics at /metrics, in Prometheus text format (prometheus-client).

Figures are read from the database at scrape time by a custom collector, so every web process
answers the same and nothing needs a multiprocess registry. Counters derive from append-only rows
(job events, node events), which makes them monotonic across restarts.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from cluster.models import JobEfficiency, Node, UnresolvedExporter
from cluster.states import NodeState
from jobs.models import Job, JobEvent
from jobs.states import HOLDS_GPUS, WAITING, JobState
from portal.access import is_operator
from portal.loops import lag_s
from portal.models import ControlLoop

WAIT_BUCKETS_S = (10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)


class PortalCollector(Collector):
    """Queue, admission, preemption and node figures, read fresh at each scrape."""

    def collect(self) -> Iterator[Metric]:
        yield from self._queue()
        yield self._wait_histogram()
        yield from self._transitions()
        yield from self._nodes()
        yield self._efficiency()
        yield from self._loops()
        yield from self._unresolved()

    def _queue(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("gridportal_queue_jobs", "Jobs waiting for admission.", labels=["team", "gpu_model"])
        gpus = GaugeMetricFamily("gridportal_queue_gpus", "GPUs asked for by waiting jobs.", labels=["team", "gpu_model"])
        rows = Job.objects.filter(state__in=WAITING).values("team__slug", "gpu_model").annotate(n=Count("id"), g=Sum("gpus"))
        for r in rows:
            jobs.add_metric([r["team__slug"], r["gpu_model"]], r["n"])
            gpus.add_metric([r["team__slug"], r["gpu_model"]], r["g"] or 0)
        held = GaugeMetricFamily("gridportal_gpus_allocated", "GPUs held by admitted or running jobs.", labels=["team", "pool"])
        for team, pool, count in (
            Job.objects.filter(state__in=HOLDS_GPUS).values_list("team__slug", "pool").annotate(g=Sum("gpus"))
        ):
            held.add_metric([team, pool], count or 0)
        yield from (jobs, gpus, held)

    def _wait_histogram(self) -> Metric:
        wait = ExpressionWrapper(F("admitted_at") - F("submitted_at"), output_field=DurationField())
        admitted = Job.objects.filter(admitted_at__isnull=False).annotate(wait=wait)
        counts = admitted.aggregate(
            total=Count("id"),
            waited=Sum("wait"),
            **{f"le{i}": Count("id", filter=Q(wait__lte=timedelta(seconds=b))) for i, b in enumerate(WAIT_BUCKETS_S)},
        )
        seconds = counts["waited"].total_seconds() if counts["waited"] else 0.0
        buckets = [(f"{b:g}", float(counts[f"le{i}"])) for i, b in enumerate(WAIT_BUCKETS_S)] + [("+Inf", float(counts["total"]))]
        return HistogramMetricFamily(
            "gridportal_admission_wait_seconds", "Time from submission to admission.", buckets=buckets, sum_value=seconds
        )

    def _transitions(self) -> Iterator[Metric]:
        for state, name, help_text in (
            (JobState.ADMITTED, "gridportal_admissions", "Admissions, from the job event log."),
            (JobState.PREEMPTING, "gridportal_preemptions", "Preemptions, from the job event log."),
        ):
            counter = CounterMetricFamily(name, help_text, labels=["team"])
            for r in JobEvent.objects.filter(to_state=state).values("job__team__slug").annotate(n=Count("id")):
                counter.add_metric([r["job__team__slug"]], r["n"])
            yield counter

    def _nodes(self) -> Iterator[Metric]:
        nodes = GaugeMetricFamily("gridportal_nodes", "Nodes by pool and state.", labels=["pool", "state"])
        for r in Node.objects.values("pool__name", "state").annotate(n=Count("id")):
            nodes.add_metric([r["pool__name"], r["state"]], r["n"])
        cordoned = GaugeMetricFamily("gridportal_nodes_cordoned", "Nodes out of service (cordoned or draining).")
        cordoned.add_metric([], Node.objects.filter(state__in=[NodeState.CORDONED, NodeState.DRAINING]).count())
        yield from (nodes, cordoned)

    def _efficiency(self) -> Metric:
        done = JobEfficiency.objects.filter(final=True, mean_utilization__isnull=False)
        gauge = GaugeMetricFamily(
            "gridportal_finished_jobs_gpu_utilization_mean", "Mean GPU utilisation of finished jobs (percent)."
        )
        mean = done.aggregate(m=Avg("mean_utilization"))["m"]
        gauge.add_metric([], float(mean or 0.0))
        return gauge

    def _loops(self) -> Iterator[Metric]:
        """Each control loop's last duration, lag behind its period, and counts (portal/loops.py)."""
        label = ["loop"]
        duration = GaugeMetricFamily("gridportal_control_loop_duration_seconds", "Duration of the loop's last run.", labels=label)
        lag = GaugeMetricFamily(
            "gridportal_control_loop_lag_seconds",
            "How far the loop is behind its period: time since its last successful run minus the period (0 when on time).",
            labels=label,
        )
        period = GaugeMetricFamily("gridportal_control_loop_period_seconds", "The period the loop is scheduled at.", labels=label)
        last_ok = GaugeMetricFamily(
            "gridportal_control_loop_last_success_timestamp_seconds", "When the loop last ended without an error.", labels=label
        )
        runs = CounterMetricFamily("gridportal_control_loop_runs", "Runs of the loop.", labels=label)
        failures = CounterMetricFamily(
            "gridportal_control_loop_failures", "Runs of the loop that ended with an error.", labels=label
        )
        busy = CounterMetricFamily("gridportal_control_loop_seconds", "Time spent running the loop.", labels=label)
        now = timezone.now()
        for loop in ControlLoop.objects.order_by("name"):
            duration.add_metric([loop.name], loop.last_duration_s)
            lag.add_metric([loop.name], lag_s(loop, now))
            period.add_metric([loop.name], loop.period_s)
            if loop.last_ok_at is not None:
                last_ok.add_metric([loop.name], loop.last_ok_at.timestamp())
            runs.add_metric([loop.name], loop.runs)
            failures.add_metric([loop.name], loop.failures)
            busy.add_metric([loop.name], loop.seconds_total)
        yield from (duration, lag, period, last_ok, runs, failures, busy)

    def _unresolved(self) -> Iterator[Metric]:
        """Telemetry host names that named no node (cluster/telemetry/hosts.py): their series decide nothing."""
        label = ["host"]
        series = CounterMetricFamily(
            "gridportal_telemetry_unresolved_series",
            "GPU series left out because their host label named neither a node nor an exporter whose node is known.",
            labels=label,
        )
        last = GaugeMetricFamily(
            "gridportal_telemetry_unresolved_last_seen_timestamp_seconds", "When the host name was last seen.", labels=label
        )
        for row in UnresolvedExporter.objects.order_by("name"):
            series.add_metric([row.name], row.series)
            last.add_metric([row.name], row.last_seen.timestamp())
        yield from (series, last)


def _allowed(request: HttpRequest) -> bool:
    """The scrape token, an operator's session, or a client address inside METRICS_ALLOWED_NETWORKS."""
    header = request.headers.get("Authorization", "")
    token = settings.METRICS_TOKEN
    if token and header.startswith("Bearer ") and hmac.compare_digest(header[7:].encode(), token.encode()):
        return True
    if is_operator(request.user):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in settings.METRICS_ALLOWED_NETWORKS)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return HttpResponse("metrics need the scrape token, an operator session or an allowed network\n", status=403)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PortalCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
