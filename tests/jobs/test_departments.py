"""Departments through the portal: a department's guarantee split among its teams, lending first
inside it, and its bill; operators alone set it, and every refusal names the field and the limit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from io import StringIO

import pytest
import yaml
from django.core.management import call_command
from django.test import Client

from billing.models import Invoice
from billing.services import reports
from cluster.simulator.backend import SimulatorBackend
from jobs import services as job_services
from jobs.models import Job
from jobs.states import JobState
from portal.models import Department, Membership, Team, TeamRole, User
from quotas import services as quota_services
from quotas.admin import DepartmentQuotaForm
from quotas.models import DepartmentQuota, TeamQuota
from tests.k8s.crd_schemas import crd_for


@pytest.fixture
def science(vision: Team, render: Team) -> Department:
    department = Department.objects.create(slug="science", name="Science")
    climate = Team.objects.create(slug="climate", name="Climate", department=department)
    Team.objects.filter(pk=vision.pk).update(department=department)
    TeamQuota.objects.create(team=climate, gpu_model="a100", guarantee=0, limit=16)
    TeamQuota.objects.create(team=render, gpu_model="a100", guarantee=0, limit=16)
    return department


@pytest.fixture
def dave(science: Department) -> User:
    user = User.objects.create_user(username="dave", password="pw")
    Membership.objects.create(user=user, team=Team.objects.get(slug="climate"), role=TeamRole.RESEARCHER)
    return user


def test_only_operators_set_a_department_guarantee_and_it_covers_its_teams(
    science: Department, grid: SimulatorBackend, olivia: User, bob: User
) -> None:
    with pytest.raises(quota_services.QuotaForbidden):
        quota_services.set_department_quota(bob, department=science, gpu_model="a100", guarantee=8)
    with pytest.raises(quota_services.QuotaError) as refused:
        quota_services.set_department_quota(olivia, department=science, gpu_model="a100", guarantee=3)  # vision holds 4
    assert "at least 4" in refused.value.errors["guarantee"][0]
    assert not DepartmentQuota.objects.exists()
    with pytest.raises(quota_services.QuotaError) as too_big:
        quota_services.set_department_quota(olivia, department=science, gpu_model="a100", guarantee=99)
    assert "16 a100 GPUs" in too_big.value.errors["guarantee"][0]
    assert quota_services.set_department_quota(olivia, department=science, gpu_model="a100", guarantee=6).guarantee == 6
    form = DepartmentQuotaForm(data={"department": science.pk, "gpu_model": "a100", "guarantee": 2})
    assert not form.is_valid() and "at least 4" in form.errors["guarantee"][0]


def test_a_team_guarantee_is_carved_out_of_its_departments(science: Department, grid: SimulatorBackend, olivia: User) -> None:
    quota_services.set_department_quota(olivia, department=science, gpu_model="a100", guarantee=6)
    climate = Team.objects.get(slug="climate")
    with pytest.raises(quota_services.QuotaError) as refused:
        quota_services.set_quota(olivia, team=climate, gpu_model="a100", changes={"guarantee": 4})
    (message,) = refused.value.errors["guarantee"]
    assert "department science's teams would hold 8" in message and "at most 2" in message
    assert TeamQuota.objects.get(team=climate, gpu_model="a100").guarantee == 0  # nothing half-changed
    assert quota_services.set_quota(olivia, team=climate, gpu_model="a100", changes={"guarantee": 2}).guarantee == 2


def test_an_unlendable_guarantee_is_lent_inside_the_department_first(
    science: Department, grid: SimulatorBackend, dave: User, carol: User, submit: Callable[..., Job]
) -> None:
    TeamQuota.objects.filter(team__slug="vision", gpu_model="a100").update(guarantee=16, limit=16, lendable=False)
    outsider = submit(carol, name="outsider", gpus_per_node=8)
    mate = submit(dave, name="mate", gpus_per_node=8)
    admitted = job_services.run_admission_cycle()
    assert admitted == [mate.pk]
    outsider.refresh_from_db()
    assert outsider.state == JobState.PENDING and outsider.reason == "quota"
    assert "16 of the 16 free a100 GPUs are other teams' unlendable guarantee" in outsider.reason_detail


def test_the_finance_page_totals_each_department_and_a_researcher_is_refused_it(
    science: Department, render: Team, fiona: User, alice: User
) -> None:
    month = date(2026, 10, 1)
    for slug, total in (("vision", "30.00"), ("climate", "12.50"), ("render", "40.00")):
        Invoice.objects.create(team=Team.objects.get(slug=slug), month=month, currency="EUR", total=Decimal(total))
    assert reports.summary(month)["by_department"] == {"science": Decimal("42.50"), "no department": Decimal("40.00")}
    client = Client()
    client.force_login(fiona)
    page = client.get("/billing/?month=2026-10")
    assert page.status_code == 200 and b"chart-departments" in page.content and b"Cost by department" in page.content
    client.force_login(alice)
    assert client.get("/billing/?month=2026-10").status_code == 403


def test_a_department_and_its_guarantee_are_seen_by_its_teams_and_operators_only(
    science: Department, grid: SimulatorBackend, olivia: User, dave: User, carol: User
) -> None:
    quota_services.set_department_quota(olivia, department=science, gpu_model="a100", guarantee=6)
    assert list(Department.objects.restrict(dave)) == [science] and not Department.objects.restrict(carol).exists()
    assert DepartmentQuota.objects.restrict(dave).count() == 1 and not DepartmentQuota.objects.restrict(carol).exists()
    assert DepartmentQuota.objects.restrict(olivia, "change").count() == 1
    assert not DepartmentQuota.objects.restrict(dave, "change").exists()


def test_the_kubernetes_export_nests_team_queues_under_their_departments(
    science: Department, grid: SimulatorBackend, olivia: User
) -> None:
    quota_services.set_department_quota(olivia, department=science, gpu_model="a100", guarantee=6)
    out = StringIO()
    call_command("export_cluster_config", "--format", "k8s", stdout=out)
    queues = {o["metadata"]["name"]: o for o in yaml.safe_load_all(out.getvalue()) if o["kind"] == "Queue"}
    crd = crd_for("scheduling.volcano.sh/v1beta1", "Queue")
    for queue in queues.values():
        assert crd.errors(queue) == [] and crd.unknown_fields(queue) == [], queue["metadata"]["name"]
    parent = queues["department-science-a100"]["spec"]
    assert parent["deserved"] == {"nvidia.com/gpu": 6} and parent["capability"] == {"nvidia.com/gpu": 12 + 16}
    assert queues["team-vision-a100"]["spec"]["parent"] == "department-science-a100"
    assert queues["team-climate-a100"]["spec"]["parent"] == "department-science-a100"
    assert "parent" not in queues["team-render-a100"]["spec"] and "parent" not in queues["team-vision-h100"]["spec"]
