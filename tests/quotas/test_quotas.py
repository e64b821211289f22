"""Quota changes: validated, limited by role, audited; lending shows who uses whose GPUs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client
from rest_framework.test import APIClient

from cluster.simulator.backend import SimulatorBackend
from jobs import services
from jobs.models import Job
from portal.models import Team, User
from quotas.lending import QuotaProposal, TeamShare, check_quota, lending
from quotas.models import QuotaChange, TeamQuota


def proposal(guarantee: int = 4, limit: int = 8, weight: int = 1, lendable: bool = True) -> QuotaProposal:
    return QuotaProposal(guarantee, limit, weight, lendable)


def check(
    p: QuotaProposal, *, operator: bool = True, current: QuotaProposal | None = None, ceiling: int | None = None, others: int = 0
) -> dict[str, list[str]]:
    return check_quota(
        p, model="a100", capacity=16, other_guarantees=others, by_operator=operator, current=current, lead_ceiling=ceiling
    )


def test_a_limit_below_the_guarantee_is_refused_by_name() -> None:
    assert "below the guarantee" in check(proposal(8, 4))["limit"][0]


def test_guarantees_of_a_model_may_not_add_up_to_more_than_its_gpus() -> None:
    assert "would add up to 18, more than its 16 GPUs" in check(proposal(6, 8), others=12)["guarantee"][0]


def test_a_limit_above_the_grid_is_refused() -> None:
    assert "more than the 16 a100 GPUs" in check(proposal(4, 20))["limit"][0]


def test_a_lead_may_move_the_limit_within_the_ceiling_and_lend_but_nothing_else() -> None:
    now = proposal(4, 8)
    assert check(proposal(4, 12, lendable=False), operator=False, current=now, ceiling=12) == {}
    assert "above the 12 GPUs operators allow" in check(proposal(4, 14), operator=False, current=now, ceiling=12)["limit"][0]
    assert "only operators change guarantees" in check(proposal(6, 8), operator=False, current=now)["guarantee"][0]
    assert "only operators" in check(proposal(4, 8, weight=3), operator=False, current=now)["weight"][0]


def test_borrowing_comes_from_unguaranteed_capacity_first_then_from_idle_lendable_guarantees() -> None:
    shares = [TeamShare("a", 8, 16, 12), TeamShare("b", 4, 8, 0), TeamShare("c", 4, 8, 0, lendable=False)]
    flow = lending(shares, capacity=18)
    assert flow.from_unguaranteed["a"] == pytest.approx(2)
    assert flow.borrowed_from["a"] == pytest.approx({"b": 2})
    assert flow.lent_to == {"b": {"a": pytest.approx(2)}}


@pytest.fixture
def quota_api(api: Callable[[User | None], APIClient], grid: SimulatorBackend) -> Callable[[User | None], APIClient]:
    return api


def test_a_lead_raises_the_limit_within_the_ceiling_and_it_is_audited(
    quota_api: Callable[[User | None], APIClient], bob: User, olivia: User, vision: Team
) -> None:
    quota = TeamQuota.objects.get(team=vision, gpu_model="a100")
    assert quota_api(olivia).patch(f"/api/v1/quotas/{quota.pk}/", {"lead_max_limit": 14}, format="json").status_code == 200
    response = quota_api(bob).patch(f"/api/v1/quotas/{quota.pk}/", {"limit": 14, "reason": "deadline"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["limit"] == 14
    change = QuotaChange.objects.filter(team=vision).first()
    assert change is not None and change.before is not None and change.after is not None
    assert (change.actor, change.before["limit"], change.after["limit"], change.reason) == ("bob", 12, 14, "deadline")
    too_far = quota_api(bob).patch(f"/api/v1/quotas/{quota.pk}/", {"limit": 15}, format="json")
    assert too_far.status_code == 400 and "operators allow" in too_far.json()["limit"][0]
    assert TeamQuota.objects.get(pk=quota.pk).limit == 14


def test_researchers_read_their_quota_but_cannot_change_it(
    quota_api: Callable[[User | None], APIClient], alice: User, vision: Team
) -> None:
    quota = TeamQuota.objects.get(team=vision, gpu_model="a100")
    assert [q["team"] for q in quota_api(alice).get("/api/v1/quotas/").json()] == ["vision"]
    assert quota_api(alice).patch(f"/api/v1/quotas/{quota.pk}/", {"limit": 1}, format="json").status_code == 403
    assert not QuotaChange.objects.exists()


def test_an_outsider_neither_sees_nor_changes_another_teams_quota(
    quota_api: Callable[[User | None], APIClient], carol: User, vision: Team
) -> None:
    quota = TeamQuota.objects.get(team=vision, gpu_model="a100")
    assert quota_api(carol).get("/api/v1/quotas/").json() == []
    assert quota_api(carol).patch(f"/api/v1/quotas/{quota.pk}/", {"limit": 1}, format="json").status_code == 404


def test_operators_create_quotas_and_guarantees_are_checked_against_capacity(
    quota_api: Callable[[User | None], APIClient], olivia: User, render: Team, vision: Team
) -> None:
    body = {"team": "render", "gpu_model": "a100", "guarantee": 14, "limit": 16}
    refused = quota_api(olivia).post("/api/v1/quotas/", body, format="json")
    assert refused.status_code == 400 and "more than its 16 GPUs" in refused.json()["guarantee"][0]
    created = quota_api(olivia).post("/api/v1/quotas/", {**body, "guarantee": 8}, format="json")
    assert created.status_code == 201, created.json()
    assert TeamQuota.objects.get(team=render, gpu_model="a100").guarantee == 8


def test_a_quota_change_applies_from_the_next_cycle(
    quota_api: Callable[[User | None], APIClient], olivia: User, alice: User, submit: Callable[..., Job], vision: Team
) -> None:
    job = submit(alice, gpus_per_node=8)
    other = submit(alice, gpus_per_node=8)
    services.run_admission_cycle()
    other.refresh_from_db()
    assert other.state == "pending" and other.reason == "quota"
    quota = TeamQuota.objects.get(team=vision, gpu_model="a100")
    quota_api(olivia).patch(f"/api/v1/quotas/{quota.pk}/", {"limit": 16}, format="json")
    assert other.pk in services.run_admission_cycle()
    assert job.pk


def test_the_team_page_shows_lending_and_lets_the_lead_change_the_limit(
    web: Callable[[User | None], Client], bob: User, carol: User, alice: User, vision: Team, grid: SimulatorBackend
) -> None:
    page = web(bob).get("/teams/vision/")
    assert page.status_code == 200 and b"Change a quota" in page.content and b"chart-shares" in page.content
    assert b"Change a quota" not in web(alice).get("/teams/vision/").content
    assert web(carol).get("/teams/vision/").status_code == 404
    response = web(bob).post("/teams/vision/", {"gpu_model": "a100", "limit": "10", "lendable": "on"})
    assert response.status_code == 302
    assert TeamQuota.objects.get(team=vision, gpu_model="a100").limit == 10


@pytest.mark.parametrize(
    ("typed", "says"), [("-3", "-3 is outside 0-"), ("abc", "'abc' is not a whole number"), ("²", "not a whole number")]
)
def test_an_unreadable_limit_is_named_and_changes_nothing(
    web: Callable[[User | None], Client], bob: User, vision: Team, grid: SimulatorBackend, typed: str, says: str
) -> None:
    before = TeamQuota.objects.get(team=vision, gpu_model="a100").limit
    page = web(bob).post("/teams/vision/", {"gpu_model": "a100", "limit": typed}, follow=True)
    text = page.content.decode()
    assert page.status_code == 200 and "limit: " in text and says in text.replace("&#x27;", "'")
    assert "below the guarantee" not in text
    assert TeamQuota.objects.get(team=vision, gpu_model="a100").limit == before


def test_the_service_decides_what_each_role_may_change(
    alice: User, bob: User, carol: User, olivia: User, vision: Team, grid: SimulatorBackend
) -> None:
    from quotas import services as quota_services

    with pytest.raises(quota_services.QuotaForbidden):
        quota_services.set_quota(carol, team=vision, gpu_model="a100", changes={"limit": 4})  # an outsider
    with pytest.raises(quota_services.QuotaForbidden):
        quota_services.set_quota(alice, team=vision, gpu_model="a100", changes={"limit": 4})  # a researcher
    with pytest.raises(quota_services.QuotaForbidden):
        quota_services.set_quota(bob, team=vision, gpu_model="a100", changes={"limit": 4}, creating=True)
    with pytest.raises(quota_services.QuotaError) as refused:
        quota_services.set_quota(bob, team=vision, gpu_model="a100", changes={"lead_max_limit": 16})
    assert refused.value.errors == {"lead_max_limit": ["cannot be changed here"]}
    quota = quota_services.set_quota(olivia, team=vision, gpu_model="a100", changes={"guarantee": 2, "limit": 8})
    assert (quota.guarantee, quota.limit) == (2, 8)  # the vision fixture had 4 and 12
    assert QuotaChange.objects.get(team=vision).actor == "olivia"


def test_quotas_and_nodes_are_read_only_in_the_admin(olivia: User, vision: Team, grid: SimulatorBackend) -> None:
    from django.test import Client

    from cluster.models import Node

    olivia.is_staff = olivia.is_superuser = True
    olivia.save()
    client = Client()
    client.force_login(olivia)
    quota = TeamQuota.objects.get()
    node = Node.objects.first()
    assert node is not None
    assert client.get("/admin/quotas/teamquota/add/").status_code == 403
    assert client.post(f"/admin/quotas/teamquota/{quota.pk}/change/", {"guarantee": 8, "limit": 8}).status_code == 403
    assert client.post(f"/admin/cluster/node/{node.pk}/change/", {"state": "down"}).status_code == 403
    assert client.get(f"/admin/cluster/node/{node.pk}/change/").status_code == 200  # shown, not editable
    quota.refresh_from_db()
    assert quota.guarantee == 4
