"""Where GPU telemetry comes from: the simulator directly, or (when PROMETHEUS_URL is set) Prometheus."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from cluster.telemetry.errors import TelemetryUnavailable
from cluster.telemetry.names import MetricNames, parse_names

if TYPE_CHECKING:
    from cluster.simulator.model import GpuSample
    from cluster.telemetry.prometheus import PrometheusTelemetry

__all__ = ["TelemetrySource", "TelemetryUnavailable", "get_telemetry", "metric_names"]


class TelemetrySource(Protocol):
    def samples(self, hosts: list[str] | None = None, at: datetime | None = None) -> list[GpuSample]: ...

    def history(
        self, hosts: list[str], start: datetime, end: datetime, step_s: float
    ) -> list[tuple[datetime, list[GpuSample]]]: ...


def metric_names() -> MetricNames:
    from django.conf import settings

    return parse_names(settings.TELEMETRY_NAMES)


def get_telemetry() -> TelemetrySource:
    """Prometheus when configured; otherwise the simulator answers directly, so the default needs no servers."""
    # Imported on use: settings validate TELEMETRY_NAMES through this package before any model may load.
    from django.conf import settings

    from cluster.simulator.telemetry import SimulatorTelemetry

    if not settings.PROMETHEUS_URL:
        return SimulatorTelemetry()
    return _prometheus(
        settings.PROMETHEUS_URL,
        settings.TELEMETRY_NAMES,
        settings.PROMETHEUS_TIMEOUT_S,
        settings.TELEMETRY_STALE_AFTER_S,
        bool(getattr(settings, "PROMETHEUS_COMPRESS", False)),
    )


@functools.lru_cache(maxsize=4)
def _prometheus(url: str, names: str, timeout_s: float, stale_after_s: float, compress: bool = False) -> PrometheusTelemetry:
    """One client per configuration, so the cycles of a process reuse its HTTP connection."""
    from cluster.telemetry.prometheus import PrometheusTelemetry

    return PrometheusTelemetry(url, parse_names(names), timeout_s=timeout_s, stale_after_s=stale_after_s, compress=compress)
