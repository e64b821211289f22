"""`manage.py export_cluster_config --format k8s`: the cluster-side objects the portal needs, for GitOps.

Writes one multi-document YAML stream: a namespace per team, a Volcano Queue per team and GPU
model (from the team's quota, or the default limit where it has none), a PriorityClass per
portal priority class, a ResourceQuota in each team namespace refusing pods of the classes
operators limited to other teams, the ServiceAccount, ClusterRole and ClusterRoleBinding the portal's
backend needs, and for checkpoint snapshots (docs/recovery.md) a ClusterRole of their own and, when
K8S_SNAPSHOT_CLASS and K8S_SNAPSHOT_DRIVER are set, the VolumeSnapshotClass. Nothing is sent to a cluster; commit the output to the GitOps repository.
"""

from __future__ import annotations

from typing import Any

import yaml
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from cluster.backends.kubernetes import rbac, snapshots
from cluster.backends.kubernetes.backend import KubeSettings
from cluster.backends.kubernetes.manifests import Manifest, ManifestConfig, ManifestError, department_queue_for, namespace_for
from cluster.gpus import GPU_MODELS
from cluster.models import Pool
from portal.models import Team
from quotas import services as quota_services
from quotas import volcano
from quotas.models import DepartmentQuota, PriorityClass, TeamQuota


def quota_rows(default_limit: int) -> list[volcano.QueueQuota]:
    """Every (team, GPU model) pair: its quota, or the default limit with no guarantee; under its
    department's queue of the model where the department has a guarantee of it."""
    department = quota_services.departments_of_teams()
    parents = set(DepartmentQuota.objects.values_list("department__slug", "gpu_model"))

    def parent(team: str, model: str) -> str:
        slug = department.get(team, "")
        return department_queue_for(slug, model) if (slug, model) in parents else ""

    explicit = {
        (q.team.slug, q.gpu_model): volcano.QueueQuota(
            q.team.slug, q.gpu_model, q.guarantee, q.limit, q.weight, q.lendable, parent(q.team.slug, q.gpu_model)
        )
        for q in TeamQuota.objects.select_related("team")
    }
    teams = Team.objects.values_list("slug", flat=True)
    return [
        explicit.get((t, m)) or volcano.QueueQuota(t, m, 0, default_limit, parent=parent(t, m))
        for t in teams
        for m in exported_models()
    ]


def exported_models() -> list[str]:
    """Every whole GPU model, and the shared ones (MIG slices, time-sliced) the grid has or a team has a quota of."""
    used = set(Pool.objects.values_list("gpu_model", flat=True)) | set(TeamQuota.objects.values_list("gpu_model", flat=True))
    return sorted(m for m, model in GPU_MODELS.items() if not model.shares or m in used)


def department_queues(rows: list[volcano.QueueQuota]) -> list[Manifest]:
    """A parent queue per department guarantee; its capability is what its teams may hold together."""
    limits: dict[str, int] = {}  # per parent queue
    for row in rows:
        if row.parent:
            limits[row.parent] = limits.get(row.parent, 0) + row.limit
    queues = []
    for d in DepartmentQuota.objects.select_related("department").order_by("department__slug", "gpu_model"):
        limit = limits.get(department_queue_for(d.department.slug, d.gpu_model), d.guarantee)
        queues.append(volcano.department_queue(volcano.DepartmentQueue(d.department.slug, d.gpu_model, d.guarantee, limit)))
    return queues


def priorities() -> list[volcano.Priority]:
    return [
        volcano.Priority(p.name, p.rank, p.preemptible, p.description) for p in PriorityClass.objects.order_by("-rank", "name")
    ]


def class_fences(teams: list[str], config: ManifestConfig) -> list[Manifest]:
    """Per team namespace, a ResourceQuota refusing pods of the classes operators limited to other teams."""
    limited = quota_services.class_teams()
    fences = (
        volcano.class_fence(namespace_for(t, config), [c for c, allowed in limited.items() if t not in allowed]) for t in teams
    )
    return [fence for fence in fences if fence is not None]


def k8s_objects(config: ManifestConfig, namespace: str, service_account: str, default_limit: int) -> list[Manifest]:
    """Everything the export writes, in the order a cluster should receive it."""
    teams = list(Team.objects.order_by("slug").values_list("slug", flat=True))
    return [
        *(rbac.team_namespace(t, config) for t in teams),
        *(volcano.priority_class(p) for p in priorities()),
        *class_fences(teams, config),
        *department_queues(rows := quota_rows(default_limit)),
        *volcano.compile_queues(rows, config),
        *rbac.rbac(namespace, service_account),
        *snapshots.snapshot_rbac(namespace, service_account),
        *snapshot_classes(),
    ]


def snapshot_classes() -> list[Manifest]:
    """The VolumeSnapshotClass the nightly checkpoint snapshots use, when the site names it and its driver."""
    name, driver = getattr(settings, "K8S_SNAPSHOT_CLASS", ""), getattr(settings, "K8S_SNAPSHOT_DRIVER", "")
    return [snapshots.snapshot_class(name, driver)] if name and driver else []


class Command(BaseCommand):
    help = "Write the cluster-side configuration (Kubernetes: namespaces, Volcano Queues, PriorityClasses, RBAC) as YAML."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=["k8s"], default="k8s", help="target cluster kind (k8s: Kubernetes with Volcano)")
        parser.add_argument("--output", "-o", default="-", help="file to write; '-' (default) for standard output")
        parser.add_argument(
            "--namespace",
            default=getattr(settings, "K8S_PORTAL_NAMESPACE", "gpu-grid-portal"),
            help="namespace of the portal's service account",
        )
        parser.add_argument(
            "--service-account",
            default=getattr(settings, "K8S_SERVICE_ACCOUNT", "gpu-grid-portal"),
            help="the portal's service account",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = KubeSettings.from_django().manifest
        try:
            objects = k8s_objects(config, options["namespace"], options["service_account"], settings.DEFAULT_TEAM_GPU_LIMIT)
        except (ManifestError, snapshots.SnapshotError) as exc:
            raise CommandError(str(exc)) from exc
        text = yaml.safe_dump_all(objects, sort_keys=False, explicit_start=True)
        if options["output"] == "-":
            self.stdout.write(text, ending="")
        else:
            with open(options["output"], "w", encoding="utf-8") as out:
                out.write(text)
            self.stderr.write(f"wrote {len(objects)} objects to {options['output']}")
