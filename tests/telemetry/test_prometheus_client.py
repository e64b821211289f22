"""How the portal's Prometheus client asks: uncompressed answers unless PROMETHEUS_COMPRESS."""

from __future__ import annotations

from pytest_django import Settings

from cluster.telemetry import _prometheus, get_telemetry
from cluster.telemetry.names import MetricNames
from cluster.telemetry.prometheus import PrometheusTelemetry


def test_answers_are_asked_uncompressed_by_default_and_gzip_on_request() -> None:
    plain = PrometheusTelemetry("http://127.0.0.1:9", MetricNames())
    assert plain.client.headers == {"Accept-Encoding": "identity"}
    assert PrometheusTelemetry("http://127.0.0.1:9", MetricNames(), compress=True).client.headers is None


def test_the_setting_reaches_the_client(settings: Settings) -> None:
    settings.PROMETHEUS_URL = "http://127.0.0.1:9"
    _prometheus.cache_clear()
    source = get_telemetry()
    assert isinstance(source, PrometheusTelemetry) and source.client.headers == {"Accept-Encoding": "identity"}
    settings.PROMETHEUS_COMPRESS = True
    source = get_telemetry()
    assert isinstance(source, PrometheusTelemetry) and source.client.headers is None
    _prometheus.cache_clear()
