"""Print the recording rules the portal reads, for this site's metric names and idle threshold.

`manage.py prometheus_rules > portal-rules.yml`, then add the file to Prometheus' `rule_files`.
The shipped monitoring/prometheus-rules.yml holds the same groups for the default settings.
"""

from __future__ import annotations

from typing import Any

import yaml
from django.conf import settings
from django.core.management.base import BaseCommand

from cluster.telemetry import metric_names
from cluster.telemetry.names import RECORDED_GROUP, SUMMARY_GROUP, recording_rules, summary_rules


def rule_groups() -> dict[str, Any]:
    names = metric_names()
    per_gpu = [{"record": name, "expr": expr} for name, expr in recording_rules(names).items()]
    summaries = [
        {"record": r.record, "expr": r.expr, **({"labels": dict(r.labels)} if r.labels else {})}
        for r in summary_rules(names, settings.IDLE_THRESHOLD)
    ]
    return {"groups": [{"name": RECORDED_GROUP, "rules": per_gpu}, {"name": SUMMARY_GROUP, "rules": summaries}]}


class Command(BaseCommand):
    help = "Print the Prometheus recording rules the portal reads, for this site's TELEMETRY_NAMES and IDLE_THRESHOLD."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(yaml.safe_dump(rule_groups(), sort_keys=False, width=1000))
