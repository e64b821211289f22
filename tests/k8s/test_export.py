"""`export_cluster_config --format k8s` writes valid objects for every team, quota and priority class."""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from django.core.management import call_command
from pytest_django import Settings

from portal.models import Team
from quotas.models import PriorityClass, TeamQuota
from tests.k8s.crd_schemas import crd_for


def export(*args: str) -> list[dict[str, Any]]:
    out = StringIO()
    call_command("export_cluster_config", "--format", "k8s", *args, stdout=out)
    return list(yaml.safe_load_all(out.getvalue()))


def test_it_exports_valid_queues_priority_classes_namespaces_and_rbac(vision: Team, render: Team, settings: Settings) -> None:
    settings.DEFAULT_TEAM_GPU_LIMIT = 6
    TeamQuota.objects.filter(team=vision, gpu_model="a100").update(weight=3, lendable=False)
    PriorityClass.objects.update_or_create(name="preemptible", defaults={"rank": 10, "preemptible": True})
    objects = export()

    for obj in objects:
        if obj["kind"] == "Queue":
            crd = crd_for(obj["apiVersion"], obj["kind"])
            assert crd.errors(obj) == [] and crd.unknown_fields(obj) == []
        else:
            kubernetes_validate.validate(obj, "1.33", strict=True)
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    vision_a100 = by_name[("Queue", "team-vision-a100")]["spec"]
    assert vision_a100["capability"] == {"nvidia.com/gpu": 12} and vision_a100["guarantee"] == {"resource": {"nvidia.com/gpu": 4}}
    assert vision_a100["weight"] == 3
    assert by_name[("Queue", "team-render-h100")]["spec"]["capability"] == {"nvidia.com/gpu": 6}
    assert by_name[("PriorityClass", "preemptible")]["preemptionPolicy"] == "Never"
    assert ("Namespace", "team-render") in by_name and ("ClusterRole", "gpu-grid-portal") in by_name


def test_the_export_is_stable_for_gitops_diffs(vision: Team, render: Team, tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    call_command("export_cluster_config", "--format", "k8s", "--output", str(path), stderr=StringIO())
    first = path.read_text()
    call_command("export_cluster_config", "--format", "k8s", "--output", str(path), stderr=StringIO())
    assert path.read_text() == first and first.startswith("---")
