"""Where GPU telemetry comes from: the simulator directly, or (when configured) Prometheus."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from cluster.simulator.model import GpuSample
from cluster.simulator.telemetry import SimulatorTelemetry


class TelemetrySource(Protocol):
    def samples(self, hosts: list[str] | None = None, at: datetime | None = None) -> list[GpuSample]: ...

    def history(
        self, hosts: list[str], start: datetime, end: datetime, step_s: float
    ) -> list[tuple[datetime, list[GpuSample]]]: ...


def get_telemetry() -> TelemetrySource:
    return SimulatorTelemetry()
