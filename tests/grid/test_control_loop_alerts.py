"""The control-loop alerts fire when a loop stops, is too slow or keeps failing (promtool unit tests), and ask for
metrics /metrics really exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from portal import loops
from portal.models import User

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"


@pytest.mark.prometheus
def test_the_alert_unit_tests_pass() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    tests = sorted(str(p) for p in (MONITORING / "tests").glob("*.test.yml"))
    assert tests
    done = subprocess.run([promtool, "test", "rules", *tests], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_loop_metric_the_rules_use_is_exported(db: None, web: Callable[[User | None], Client], olivia: User) -> None:
    with loops.timed("admission"):
        pass
    rules = (MONITORING / "prometheus-rules.yml").read_text()
    asked = set(re.findall(r"\b(gridportal_control_loop_[a-z_]+)\b", rules))
    assert {"gridportal_control_loop_lag_seconds", "gridportal_control_loop_duration_seconds"} <= asked
    text = web(olivia).get("/metrics").content.decode()
    exported = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert asked <= exported, asked - exported
