"""Priority classes per team: operators limit a class to some teams; others are refused it by name, on
submission, in the Slurm accounts and in the Kubernetes namespaces."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO
from typing import Any

import kubernetes_validate
import yaml
from django.core.management import call_command
from rest_framework.test import APIClient

from cluster.simulator.backend import SimulatorBackend
from jobs.models import Job
from portal.models import Team, User
from quotas.models import PriorityClass

JOB = {"name": "train", "command": ["python", "train.py"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": "01:00:00"}


def critical_for(*teams: Team) -> PriorityClass:
    cls, _ = PriorityClass.objects.update_or_create(name="critical", defaults={"rank": 300})
    cls.teams.set(teams)
    return cls


def test_a_team_outside_a_limited_class_is_refused_it_by_name(
    api: Callable[[User | None], APIClient], alice: User, carol: User, render: Team, grid: SimulatorBackend
) -> None:
    assert api(alice).post("/api/v1/jobs/", {**JOB, "priority": "critical"}, format="json").status_code == 201  # open to all
    critical_for(render)
    before = Job.objects.count()
    refused = api(alice).post("/api/v1/jobs/", {**JOB, "priority": "critical"}, format="json")
    assert refused.status_code == 400
    (message,) = refused.json()["priority"]
    assert "team vision may not use class 'critical'" in message and "standard" in message
    assert Job.objects.count() == before  # nothing half-submitted
    assert api(carol).post("/api/v1/jobs/", {**JOB, "priority": "critical"}, format="json").status_code == 201
    assert api(alice).post("/api/v1/jobs/", {**JOB, "priority": "standard"}, format="json").status_code == 201


def test_opening_the_class_again_takes_effect_at_once(
    api: Callable[[User | None], APIClient], alice: User, render: Team, grid: SimulatorBackend
) -> None:
    cls = critical_for(render)
    assert api(alice).post("/api/v1/jobs/", {**JOB, "priority": "critical"}, format="json").status_code == 400
    cls.teams.clear()
    assert api(alice).post("/api/v1/jobs/", {**JOB, "priority": "critical"}, format="json").status_code == 201


def test_the_kubernetes_export_fences_each_namespace_off_its_denied_classes(vision: Team, render: Team) -> None:
    critical_for(render)
    PriorityClass.objects.update_or_create(name="preemptible", defaults={"rank": 10, "preemptible": True})
    out = StringIO()
    call_command("export_cluster_config", "--format", "k8s", stdout=out)
    objects: list[dict[str, Any]] = list(yaml.safe_load_all(out.getvalue()))
    fences = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "ResourceQuota"}
    assert set(fences) == {"team-vision"}  # render may use every class
    fence = fences["team-vision"]
    kubernetes_validate.validate(fence, "1.33", strict=True)
    assert fence["spec"]["hard"] == {"pods": "0"}
    (expression,) = fence["spec"]["scopeSelector"]["matchExpressions"]
    assert expression == {"scopeName": "PriorityClass", "operator": "In", "values": ["critical"]}
