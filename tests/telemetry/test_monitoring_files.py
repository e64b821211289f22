"""The shipped alert rules pass promtool; the Grafana dashboard is valid as data and asks for metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cluster.telemetry.names import MetricNames

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
PORTAL_METRICS = {"gridportal_queue_gpus", "gridportal_admission_wait_seconds_bucket", "gridportal_admissions_total",
                  "gridportal_preemptions_total", "gridportal_nodes_cordoned", "up"}  # fmt: skip


@pytest.mark.prometheus
def test_the_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    done = subprocess.run([promtool, "check", "rules", str(MONITORING / "prometheus-rules.yml")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


def test_the_rules_cover_thermal_exporter_down_and_queue_wait() -> None:
    text = (MONITORING / "prometheus-rules.yml").read_text()
    for alert in ("GpuTemperatureHigh", "GpuXidError", "DcgmExporterDown", "AdmissionWaitTooLong"):
        assert f"alert: {alert}" in text


def test_the_grafana_dashboard_is_well_formed() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0
        assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"])
        assert p["datasource"]["uid"] == "${datasource}"


def test_every_metric_the_dashboard_asks_for_is_exported() -> None:
    known = set(MetricNames().all_metrics()) | PORTAL_METRICS
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    asked = {
        name
        for p in dashboard["panels"]
        for t in p["targets"]
        for name in re.findall(r"\b(DCGM_FI_[A-Z_]+|gridportal_[a-z_]+|up)\b", t["expr"])
    }
    assert asked <= known, asked - known
