"""Demo teams, users, quotas and a busy grid, for a first run. Safe to run again."""

from __future__ import annotations

import random
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from cluster import services as cluster_services
from jobs import services as job_services
from jobs.models import Job
from portal.models import Membership, Team, TeamRole, User
from quotas.models import TeamQuota

PASSWORD = "gridportal"
TEAMS: dict[str, tuple[str, dict[str, tuple[int, int]]]] = {
    "vision": ("Computer Vision Lab", {"a100": (8, 16), "h100": (4, 8)}),
    "render": ("Render Farm", {"a100": (4, 8), "a10g": (0, 8)}),
    "climate": ("Climate Simulation", {"a100": (8, 24), "h100": (8, 16)}),
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
]


class Command(BaseCommand):
    help = "Create demo teams, users, quotas and jobs on the simulated grid, and print the logins."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--jobs", type=int, default=len(DEMO_JOBS), help="How many demo jobs to submit (0: none).")

    def handle(self, *args: Any, **options: Any) -> None:
        cluster_services.sync_nodes()
        with transaction.atomic():
            teams = self._teams()
            users = self._users(teams)
        if not Job.objects.exists() and options["jobs"] > 0:
            self._jobs(users, options["jobs"])
        self.stdout.write(self.style.SUCCESS(f"Demo logins (password for all: {PASSWORD}):"))
        for username, team, role, operator, finance in USERS:
            what = "operator" if operator else "finance" if finance else f"{role} in {team}"
            self.stdout.write(f"  {username:<8} {what}")

    def _teams(self) -> dict[str, Team]:
        teams = {}
        for slug, (name, quotas) in TEAMS.items():
            team, _ = Team.objects.get_or_create(slug=slug, defaults={"name": name})
            teams[slug] = team
            for model, (guarantee, limit) in quotas.items():
                TeamQuota.objects.get_or_create(team=team, gpu_model=model, defaults={"guarantee": guarantee, "limit": limit})
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
