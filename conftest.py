"""Test-wide rules: service markers, and under CI=true no service-marked test may skip."""

from __future__ import annotations

import os
from typing import Any

import pytest

SERVICE_MARKERS = ("postgres", "redis", "browser", "slurm", "prometheus", "k8s")
IN_CI = os.environ.get("CI") == "true"


def pytest_configure(config: pytest.Config) -> None:
    for name in SERVICE_MARKERS:
        config.addinivalue_line("markers", f"{name}: needs a real {name} service; never skipped under CI=true")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and any(item.get_closest_marker(m) for m in SERVICE_MARKERS):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"CI=true: a test marked for a service must run, but it skipped: {reason}"
