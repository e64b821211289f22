"""Demo teams, users, quotas, a busy grid and a billed past, for a first run. Safe to run again.

Every persona's main page has something on first start: rate cards for each GPU model and pool
kind, last month's finished jobs metered into draft invoices, a budget near its notify threshold,
quota ceilings a lead can raise the limit to, and an A10G queue the burst policy has proposed for.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import ROUND_UP, Decimal
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from billing import services as billing_services
from billing.metering import month_of, month_start
from billing.models import Budget, RateCard
from billing.services.budgets import spend
from bursting import services as burst_services
from bursting.models import BurstPolicy, InstanceType
from cluster import services as cluster_services
from cluster.models import Pool
from cluster.states import PoolKind
from jobs import services as job_services
from jobs.models import Job
from portal.models import Membership, Team, TeamRole, User
from quotas.models import TeamQuota

PASSWORD = "gridportal"
# slug: name, {model: (guarantee, limit, ceiling a lead may raise the limit to)}
TEAMS: dict[str, tuple[str, dict[str, tuple[int, int, int]]]] = {
    "vision": ("Computer Vision Lab", {"a100": (8, 16, 24), "h100": (4, 8, 12)}),
    "render": ("Render Farm", {"a100": (4, 8, 12), "a10g": (0, 8, 16)}),
    "climate": ("Climate Simulation", {"a100": (8, 24, 32), "h100": (8, 12, 16)}),
}
# On-premises price per GPU-hour; a cloud GPU-hour costs CLOUD_MARKUP times as much.
PRICES = {
    "a100": Decimal("2.00"),
    "h100": Decimal("4.00"),
    "a10g": Decimal("1.10"),
    "l4": Decimal("0.80"),
    "v100": Decimal("1.20"),
}
CLOUD_MARKUP = Decimal("1.5")
BUDGET_TEAM, BUDGET_SHARE = "vision", Decimal("0.85")  # vision has spent 85 % of its monthly budget; notify at 80 %
# Last month's finished jobs: user, job, pool, day of the month it started, hours it ran.
HISTORY: list[tuple[str, dict[str, Any], str, int, int]] = [
    ("alice", {"template": "pytorch-ddp", "name": "resnet50-baseline", "gpus_per_node": 8, "walltime": "24:00:00"}, "onprem-a100", 3, 20),
    ("bob", {"template": "pytorch-ddp", "name": "llm-sft", "gpu_model": "h100", "gpus_per_node": 8, "walltime": "48:00:00"}, "onprem-h100", 8, 36),
    ("carol", {"template": "blender-render", "name": "teaser-frames", "walltime": "12:00:00"}, "onprem-a100", 12, 10),
    ("dave", {"template": "gromacs-md", "name": "ocean-spinup", "gpus_per_node": 4, "walltime": "40:00:00"}, "onprem-a100", 14, 30),
    ("erin", {"template": "gromacs-md", "name": "ice-shelf", "gpu_model": "h100", "gpus_per_node": 8, "walltime": "24:00:00"}, "onprem-h100", 20, 18),
]  # fmt: skip
A10G_JOB = {
    "name": "trailer-denoise",
    "command": ["python", "denoise.py"],
    "gpu_model": "a10g",
    "gpus_per_node": 4,
    "walltime": "01:00:00",
}
USERS: list[tuple[str, str | None, str | None, bool, bool]] = [
    # username, team, role, operator, finance
    ("alice", "vision", TeamRole.RESEARCHER, False, False),
    ("bob", "vision", TeamRole.LEAD, False, False),
    ("carol", "render", TeamRole.RESEARCHER, False, False),
    ("dave", "climate", TeamRole.RESEARCHER, False, False),
    ("erin", "climate", TeamRole.LEAD, False, False),
    ("olivia", None, None, True, False),
    ("fiona", None, None, False, True),
]
DEMO_JOBS: list[tuple[str, dict[str, Any]]] = [
    ("alice", {"template": "pytorch-ddp", "name": "resnet50-imagenet", "gpus_per_node": 8, "walltime": "02:00:00"}),
    ("alice", {"template": "pytorch-ddp", "name": "vit-finetune", "gpus_per_node": 4, "walltime": "01:00:00"}),
    ("bob", {"template": "pytorch-ddp", "name": "llm-pretrain", "gpu_model": "h100", "gpus_per_node": 8, "walltime": "04:00:00"}),
    ("carol", {"template": "blender-render", "name": "trailer-shot", "array": "0-5", "walltime": "00:40:00"}),
    ("dave", {"template": "gromacs-md", "name": "ocean-box", "gpus_per_node": 4, "walltime": "03:00:00"}),
    ("dave", {"template": "gromacs-md", "name": "ice-sheet", "gpu_model": "h100", "gpus_per_node": 8, "walltime": "05:00:00"}),
    ("erin", {"template": "pytorch-ddp", "name": "weather-gnn", "gpus_per_node": 8, "nodes": 2, "walltime": "03:00:00"}),
    # A10G only comes from the elastic cloud pool: these wait, and the a10g burst policy proposes nodes for them.
    ("carol", A10G_JOB),
    ("carol", {**A10G_JOB, "name": "trailer-upscale"}),
    ("carol", {**A10G_JOB, "name": "trailer-grade"}),
]


class Command(BaseCommand):
    help = "Create demo teams, users, quotas and jobs on the simulated grid, and print the logins."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--jobs",
            type=int,
            default=len(DEMO_JOBS),
            help="How many demo jobs to submit (0: none, and no history, invoices, budget or burst either).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        cluster_services.sync_nodes()
        with transaction.atomic():
            teams = self._teams()
            users = self._users(teams)
        if options["jobs"] > 0:  # --jobs 0: the logins only (browser tests and drills bring their own data)
            self._activity(teams, users, options["jobs"])
        self.stdout.write(self.style.SUCCESS(f"Demo logins (password for all: {PASSWORD}):"))
        for username, team, role, operator, finance in USERS:
            what = "operator" if operator else "finance" if finance else f"{role} in {team}"
            self.stdout.write(f"  {username:<8} {what}")

    def _activity(self, teams: dict[str, Team], users: dict[str, User], count: int) -> None:
        # Before the jobs: the a10g policy is what makes A10G jobs valid (only the elastic pool has A10G).
        # No trigger window, so the demo's A10G queue has a proposal waiting for the operator at once.
        call_command("seed_bursting", trigger_window_s=0, stdout=self.stdout)
        now = timezone.now()
        if not Job.objects.exists():
            self._history(users, now)
            self._jobs(users, count)
        self._billing(teams, now)
        for policy in BurstPolicy.objects.filter(enabled=True):
            burst_services.evaluate_policy(policy)

    def _teams(self) -> dict[str, Team]:
        teams = {}
        for slug, (name, quotas) in TEAMS.items():
            team, _ = Team.objects.get_or_create(slug=slug, defaults={"name": name})
            teams[slug] = team
            for model, (guarantee, limit, ceiling) in quotas.items():
                quota, _ = TeamQuota.objects.get_or_create(
                    team=team, gpu_model=model, defaults={"guarantee": guarantee, "limit": limit, "lead_max_limit": ceiling}
                )
                if quota.lead_max_limit is None:  # seeded before ceilings: leads could not raise anything
                    TeamQuota.objects.filter(pk=quota.pk).update(lead_max_limit=max(ceiling, quota.limit))
        return teams

    def _users(self, teams: dict[str, Team]) -> dict[str, User]:
        users = {}
        for username, team, role, operator, finance in USERS:
            user, created = User.objects.get_or_create(
                username=username,
                defaults={
                    "email": f"{username}@grid.example",
                    "is_operator": operator,
                    "is_finance": finance,
                    "is_staff": operator,
                },
            )
            if created:
                user.set_password(PASSWORD)
                user.save()
            if team and role:
                Membership.objects.get_or_create(user=user, team=teams[team], defaults={"role": role})
            users[username] = user
        return users

    def _jobs(self, users: dict[str, User], count: int) -> None:
        rng = random.Random(7)
        for i in range(count):
            username, raw = DEMO_JOBS[i % len(DEMO_JOBS)]
            raw = {**raw, "name": raw["name"] if i < len(DEMO_JOBS) else f"{raw['name']}-{rng.randint(100, 999)}"}
            job_services.submit(users[username], raw)
        job_services.run_admission_cycle()

    def _history(self, users: dict[str, User], now: datetime) -> None:
        """Finished jobs last month (for its invoices) and one earlier this month (for the budget)."""
        this_month = month_start(month_of(now))
        last_month = month_start(billing_services.previous_month(now))
        for username, raw, pool, day, hours in HISTORY:
            start = last_month + timedelta(days=day - 1, hours=9)
            job_services.record_past_job(
                users[username], raw, pool=pool, submitted_at=start - timedelta(minutes=20), started_at=start,
                finished_at=start + timedelta(hours=hours),
            )  # fmt: skip
        start = max(this_month, now - timedelta(days=3))
        end = min(start + timedelta(hours=30), now - timedelta(minutes=1))
        if end > start:
            raw = {"template": "pytorch-ddp", "name": "vit-sweep", "gpus_per_node": 8, "walltime": "36:00:00"}
            job_services.record_past_job(
                users["alice"], raw, pool="onprem-a100", submitted_at=start, started_at=start, finished_at=end
            )

    def _billing(self, teams: dict[str, Team], now: datetime) -> None:
        """Rate cards for every GPU model and pool kind of the grid, usage metered, last month drafted, a budget."""
        last_month = billing_services.previous_month(now)
        keys = set(Pool.objects.values_list("gpu_model", "kind"))
        keys |= {
            (model, PoolKind.CLOUD) for model in InstanceType.objects.filter(active=True).values_list("gpu_model", flat=True)
        }
        for model, kind in sorted(keys):
            if not RateCard.objects.filter(gpu_model=model, pool_kind=kind, pool="").exists():
                price = PRICES.get(model, Decimal("1.00")) * (CLOUD_MARKUP if kind == PoolKind.CLOUD else 1)
                billing_services.add_rate_card(
                    gpu_model=model, pool_kind=kind, per_gpu_hour=price, valid_from=last_month.replace(year=last_month.year - 1),
                    note="demo price",
                )  # fmt: skip
        billing_services.meter_month(last_month, now)
        billing_services.meter_month(month_of(now), now)
        report = billing_services.draft_month(last_month)
        for slug, why in report.failed.items():
            self.stdout.write(self.style.WARNING(f"invoice for {slug} not drafted: {why}"))
        team = teams[BUDGET_TEAM]
        if not Budget.objects.filter(team=team).exists():
            spent = spend(team.pk, [month_of(now)])
            amount = (spent / BUDGET_SHARE).quantize(Decimal("1"), rounding=ROUND_UP) if spent > 0 else Decimal(1000)
            budget = billing_services.set_budget(team.pk, amount, [(Decimal(80), "notify"), (Decimal(100), "notify")])
            billing_services.evaluate_budget(budget.pk, now)
