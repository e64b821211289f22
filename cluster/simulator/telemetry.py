"""GPU telemetry of the simulated grid, computed from who held which GPU when."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from cluster.gpus import GPU_MODELS
from cluster.models import SimJob, SimNode
from cluster.simulator.model import THERMAL_TAU_S, BusySpan, GpuSample, gpu_sample

Spans = dict[tuple[str, int], list[BusySpan]]


class SimulatorTelemetry:
    """Current and historical per-GPU samples; what a Prometheus over dcgm-exporter would answer."""

    def __init__(self, clock: Callable[[], datetime] = timezone.now) -> None:
        self.clock = clock

    def _spans(self, hosts: list[str] | None, since: datetime) -> Spans:
        jobs = SimJob.objects.filter(started_at__isnull=False).filter(
            Q(ended_at__isnull=True) | Q(ended_at__gte=since - timedelta(seconds=6 * THERMAL_TAU_S))
        )
        spans: Spans = defaultdict(list)
        for job in jobs.only("placement", "started_at", "ended_at", "ends_at", "load", "memory_fraction", "portal_job_id"):
            assert job.started_at is not None and job.ends_at is not None
            end = job.ended_at or job.ends_at
            for host, gpus in job.placement.items():
                if hosts is not None and host not in hosts:
                    continue
                for gpu in gpus:
                    spans[(host, gpu)].append(
                        BusySpan(job.started_at.timestamp(), end.timestamp(), job.load, job.memory_fraction, job.portal_job_id)
                    )
        return spans

    def _nodes(self, hosts: list[str] | None) -> list[SimNode]:
        nodes = SimNode.objects.exclude(state="down")
        if hosts is not None:
            nodes = nodes.filter(name__in=hosts)
        return list(nodes)

    def samples(self, hosts: list[str] | None = None, at: datetime | None = None) -> list[GpuSample]:
        moment = at or self.clock()
        spans = self._spans(hosts, moment)
        return [self._sample(node, gpu, moment.timestamp(), spans) for node in self._nodes(hosts) for gpu in range(node.gpus)]

    def history(self, hosts: list[str], start: datetime, end: datetime, step_s: float) -> list[tuple[datetime, list[GpuSample]]]:
        spans = self._spans(hosts, start)
        nodes = self._nodes(hosts)
        points: list[tuple[datetime, list[GpuSample]]] = []
        moment = start
        while moment <= end:
            t = moment.timestamp()
            points.append((moment, [self._sample(n, g, t, spans) for n in nodes for g in range(n.gpus)]))
            moment += timedelta(seconds=step_s)
        return points

    @staticmethod
    def _sample(node: SimNode, gpu: int, t: float, spans: Spans) -> GpuSample:
        since = node.fault_since.timestamp() if node.fault_since else None
        return gpu_sample(
            GPU_MODELS[node.gpu_model],
            node.name,
            gpu,
            t,
            spans.get((node.name, gpu), []),
            overheat_since=since if node.fault == "overheat" else None,
            xid_errors=79 if node.fault == "xid" and gpu == 0 else 0,
        )
