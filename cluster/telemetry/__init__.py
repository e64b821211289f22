"""Where GPU telemetry comes from: the simulator directly, or (when PROMETHEUS_URL is set) Prometheus."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from cluster.telemetry.errors import TelemetryUnavailable
from cluster.telemetry.names import MetricNames, parse_names

if TYPE_CHECKING:
    from cluster.simulator.model import GpuSample

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
    from cluster.telemetry.prometheus import PrometheusTelemetry

    if not settings.PROMETHEUS_URL:
        return SimulatorTelemetry()
    return PrometheusTelemetry(
        settings.PROMETHEUS_URL,
        metric_names(),
        timeout_s=settings.PROMETHEUS_TIMEOUT_S,
        stale_after_s=settings.TELEMETRY_STALE_AFTER_S,
    )
