"""Replay a GPU job trace through the admission policy and print its figures (no database needed)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from jobs.policy import replay


class Command(BaseCommand):
    help = "Replay a job trace (job_id, submit_time_s, duration_s, num_gpus, team) through a policy and a baseline."
    requires_system_checks: list[str] = []  # pure computation: no models, no database

    def add_arguments(self, parser: Any) -> None:
        replay.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = replay.run_from_options(options)
        except replay.TraceError as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            replay.format_report(report, self.stdout.write)
