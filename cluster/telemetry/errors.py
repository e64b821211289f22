"""Errors of the telemetry sources."""


class TelemetryUnavailable(Exception):
    """Telemetry could not be read (Prometheus down, slow or answering nonsense); retrying later can help."""
