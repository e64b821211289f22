"""A demo instance catalogue and one burst policy per GPU model that has cloud pools. Safe to run again."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from bursting.models import BurstPolicy, InstanceType
from bursting.services import pool_problem

# name, GPU model, GPUs per node, price per node-hour (on-demand list prices), cloud pool
CATALOGUE: list[tuple[str, str, int, str, str]] = [
    ("g5.12xlarge", "a10g", 4, "5.6720", "burst-a10g"),
    ("g5.48xlarge", "a10g", 8, "16.2880", "burst-a10g-8"),
    ("p3.8xlarge", "v100", 4, "12.2400", "burst-v100"),
    ("p4d.24xlarge", "a100", 8, "32.7726", "burst-a100"),
]


class Command(BaseCommand):
    help = "Create the demo instance types and a burst policy for each GPU model (only types whose pool is given)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pools", default="burst-a10g", help="Comma-separated cloud pools to offer (default burst-a10g).")
        parser.add_argument("--trigger-pending-gpus", type=int, default=8)
        parser.add_argument("--trigger-wait-s", type=int, default=1800)
        parser.add_argument("--trigger-window-s", type=int, default=300)
        parser.add_argument("--max-nodes", type=int, default=8)
        parser.add_argument("--idle-release-s", type=int, default=600)

    def handle(self, *args: Any, **options: Any) -> None:
        pools = {p.strip() for p in options["pools"].split(",") if p.strip()}
        with transaction.atomic():
            types = [self._instance_type(*row) for row in CATALOGUE if row[4] in pools]
            for t in list(types):  # a policy must not offer a pool that cannot burst: every approval would fail
                if problem := pool_problem(t):
                    self.stdout.write(self.style.WARNING(f"left out of every policy: {problem}"))
                    types.remove(t)
            for model in sorted({t.gpu_model for t in types}):
                policy = self._policy(model, options)
                policy.instance_types.set([t for t in types if t.gpu_model == model])
                self.stdout.write(f"policy {policy.name}: {', '.join(t.name for t in types if t.gpu_model == model)}")
        if not types:
            self.stdout.write(self.style.WARNING(f"no instance type joins the pools {sorted(pools)}"))

    @staticmethod
    def _instance_type(name: str, model: str, gpus: int, price: str, pool: str) -> InstanceType:
        found, _ = InstanceType.objects.update_or_create(
            name=name, defaults={"gpu_model": model, "gpus": gpus, "price_per_hour": Decimal(price), "pool": pool}
        )
        return found

    @staticmethod
    def _policy(model: str, options: dict[str, Any]) -> BurstPolicy:
        policy, _ = BurstPolicy.objects.update_or_create(
            name=f"{model}-queue",
            defaults={
                "gpu_model": model,
                "trigger_pending_gpus": options["trigger_pending_gpus"],
                "trigger_wait_s": options["trigger_wait_s"],
                "trigger_window_s": options["trigger_window_s"],
                "max_nodes": options["max_nodes"],
                "idle_release_s": options["idle_release_s"],
            },
        )
        return policy
