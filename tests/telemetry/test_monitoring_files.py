"""The shipped rules pass promtool and record what the portal reads; the Grafana dashboard is valid as data
and asks for metrics that exist."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command

from cluster.telemetry.names import RECORDED, RECORDED_GROUP, SUMMARY_GROUP, MetricNames, recording_rules, summary_rules

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
PORTAL_METRICS = {"gridportal_queue_gpus", "gridportal_admission_wait_seconds_bucket", "gridportal_admissions_total",
                  "gridportal_preemptions_total", "gridportal_nodes_cordoned", "up",
                  # tests/grid/test_control_loop_alerts.py checks /metrics exports these
                  "gridportal_control_loop_duration_seconds", "gridportal_control_loop_period_seconds",
                  "gridportal_control_loop_lag_seconds", "gridportal_control_loop_failures_total"}  # fmt: skip


@pytest.mark.prometheus
def test_the_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    done = subprocess.run([promtool, "check", "rules", str(MONITORING / "prometheus-rules.yml")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    rules = [rule for group in _rules()["groups"] for rule in group["rules"]]
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout  # promtool read every rule of the file


def _rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((MONITORING / "prometheus-rules.yml").read_text())
    return loaded


def test_the_recording_rules_are_the_ones_the_portal_reads_and_asks_for_without_them() -> None:
    group = next(g for g in _rules()["groups"] if g["name"] == RECORDED_GROUP)
    shipped = {rule["record"]: " ".join(rule["expr"].split()) for rule in group["rules"]}
    # The names the cycle queries, and the same expressions it asks itself when the rules are not loaded.
    assert list(shipped) == [name for name, _ in RECORDED]
    assert shipped == recording_rules(MetricNames())


def test_the_summary_rules_are_the_ones_the_cycle_reads_for_the_default_threshold(settings: Any) -> None:
    group = next(g for g in _rules()["groups"] if g["name"] == SUMMARY_GROUP)
    shipped = [(r["record"], " ".join(r["expr"].split()), tuple(sorted(r.get("labels", {}).items()))) for r in group["rules"]]
    expected = [(r.record, r.expr, tuple(sorted(r.labels))) for r in summary_rules(MetricNames(), 0.05)]
    assert shipped == expected
    assert settings.IDLE_THRESHOLD == 0.05  # the shipped file is written for the default
    # `manage.py prometheus_rules` prints the same groups for a site's own names and threshold.
    settings.IDLE_THRESHOLD = 0.2
    printed = yaml.safe_load(_print_rules())
    summaries = next(g for g in printed["groups"] if g["name"] == SUMMARY_GROUP)
    assert {r.get("labels", {}).get("idle_below") for r in summaries["rules"]} == {None, "0.2"}
    assert any("< 0.2" in r["expr"] for r in summaries["rules"])


def _print_rules() -> str:
    out = io.StringIO()
    call_command("prometheus_rules", stdout=out)
    return out.getvalue()


def test_the_rules_cover_thermal_exporter_down_and_queue_wait() -> None:
    text = (MONITORING / "prometheus-rules.yml").read_text()
    for alert in ("GpuTemperatureHigh", "GpuXidError", "GpuTelemetryUnresolved", "DcgmExporterDown", "AdmissionWaitTooLong"):
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


DCGM_SCRAPE = MONITORING / "dcgm-exporter-kubernetes-scrape.yml"
DCGM_MONITOR = MONITORING.parent / "deploy" / "kubernetes" / "base" / "dcgm-servicemonitor.yaml"


def test_the_dcgm_scrape_job_and_servicemonitor_add_the_node_the_portal_reads_first() -> None:
    [job] = yaml.safe_load(DCGM_SCRAPE.read_text())
    monitor = yaml.safe_load(DCGM_MONITOR.read_text())
    [endpoint] = monitor["spec"]["endpoints"]
    first = MetricNames().host_labels[0]
    from_file = {(tuple(r.get("source_labels", ())), r.get("target_label")) for r in job["relabel_configs"]}
    from_monitor = {(tuple(r.get("sourceLabels", ())), r.get("targetLabel")) for r in endpoint["relabelings"]}
    assert (("__meta_kubernetes_pod_node_name",), first) in from_file & from_monitor
    # The pod labels the exporter writes (the pod using each GPU) are kept, not renamed exported_pod.
    assert job["honor_labels"] is True and endpoint["honorLabels"] is True
    assert job["job_name"] == "dcgm" and {"targetLabel": "job", "replacement": "dcgm"} in endpoint["relabelings"]


# Upstream's KubernetesSDConfig (discovery/kubernetes/kubernetes.go): its own fields and its roles.
KUBERNETES_SD_FIELDS = {"api_server", "role", "kubeconfig_file", "namespaces", "selectors", "attach_metadata"}
KUBERNETES_SD_ROLES = {"endpoints", "endpointslice", "service", "pod", "node", "ingress"}


@pytest.mark.prometheus
def test_the_dcgm_scrape_job_passes_promtool(tmp_path: Path) -> None:
    """Debian's Prometheus is built without Kubernetes discovery, so its promtool refuses the
    `kubernetes_sd_configs` block: that block is checked against upstream's fields here, and promtool
    checks the rest of the job (relabelling, honor_labels, interval) with static targets in its place."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    [job] = yaml.safe_load(DCGM_SCRAPE.read_text())
    [discovery] = job.pop("kubernetes_sd_configs")
    assert set(discovery) <= KUBERNETES_SD_FIELDS and discovery["role"] in KUBERNETES_SD_ROLES
    assert set(discovery.get("namespaces", {})) <= {"own_namespace", "names"}
    job["static_configs"] = [{"targets": ["127.0.0.1:9400"]}]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": [job]}))
    done = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # promtool does refuse what is wrong in the part it checks.
    job["relabel_configs"][0]["action"] = "keep-if"
    config.write_text(yaml.safe_dump({"scrape_configs": [job]}))
    assert subprocess.run([promtool, "check", "config", str(config)], capture_output=True).returncode != 0
