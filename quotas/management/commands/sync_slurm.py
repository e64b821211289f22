"""Show, and with --apply make, the changes that bring Slurm's accounts and QOS in line with the portal."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from cluster.backends.base import BackendError
from cluster.backends.slurm import SlurmBackend
from portal.models import Membership, Team
from quotas import services as quota_services
from quotas import slurm
from quotas.models import PriorityClass, TeamQuota

QOS_FORMAT = "format=name,priority,preempt,preemptmode,gracetime"
ASSOC_FORMAT = "format=account,user,fairshare,grptres,qos,defaultqos,parentname"


def portal_plan() -> slurm.SlurmPlan:
    """The portal's teams, members, quotas and priority classes, compiled to Slurm."""
    members: dict[int, list[str]] = {}
    for team_id, unix, username in Membership.objects.values_list("team_id", "user__unix_username", "user__username"):
        members.setdefault(team_id, []).append(unix or username)
    quotas: dict[int, list[tuple[str, int, int]]] = {}
    for team_id, model, limit, weight in TeamQuota.objects.values_list("team_id", "gpu_model", "limit", "weight"):
        quotas.setdefault(team_id, []).append((model, limit, weight))
    teams = [
        slurm.TeamInput(slug, tuple(members.get(pk, ())), tuple(quotas.get(pk, ())), department or "")
        for pk, slug, department in Team.objects.values_list("pk", "slug", "department__slug")
    ]
    limited = quota_services.class_teams()
    classes = [
        slurm.ClassInput(n, r, p, limited.get(n, frozenset()))
        for n, r, p in PriorityClass.objects.values_list("name", "rank", "preemptible")
    ]
    return slurm.compile_plan(teams, classes, int(getattr(settings, "SLURM_PREEMPT_GRACE_S", 30)))


def slurm_state(backend: SlurmBackend) -> slurm.SlurmState:
    show = backend.commands.run
    qos = show("sacctmgr", "-n", "-P", "show", "qos", QOS_FORMAT, what="list QOS")
    assoc = show("sacctmgr", "-n", "-P", "show", "assoc", ASSOC_FORMAT, what="list associations")
    accounts = show("sacctmgr", "-n", "-P", "show", "account", "format=account,organization", what="list accounts")
    return slurm.SlurmState(slurm.parse_qos(qos), slurm.parse_associations(assoc), slurm.parse_organizations(accounts))


def apply(backend: SlurmBackend, changes: list[slurm.Change]) -> None:
    for change in changes:
        backend.commands.run("sacctmgr", "-i", *change.sacctmgr, what=change.summary)


class Command(BaseCommand):
    help = "Compare the portal's teams, quotas and priority classes with Slurm's accounts and QOS; --apply makes Slurm match."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--apply", action="store_true", help="make the changes (the default only shows them)")

    def handle(self, *args: Any, **options: Any) -> None:
        backend = SlurmBackend()
        try:
            plan = portal_plan()
            changes = slurm.diff(plan, slurm_state(backend))
        except (ValueError, BackendError) as exc:
            raise CommandError(str(exc)) from exc
        if not changes:
            self.stdout.write("Slurm matches the portal: nothing to change.")
            return
        for change in changes:
            self.stdout.write(f"{'apply' if options['apply'] else 'would'}: {change.summary}")
        if not options["apply"]:
            self.stdout.write(f"{len(changes)} change(s); dry run, nothing changed (use --apply).")
            return
        try:
            apply(backend, changes)
        except BackendError as exc:
            raise CommandError(f"stopped: {exc}") from exc
        self.stdout.write(self.style.SUCCESS(f"applied {len(changes)} change(s)"))
