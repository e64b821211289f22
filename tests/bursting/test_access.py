"""Who reaches which console page and bursting API endpoint: operators act; members see their own queues; nobody else.

The table covers every route under /console/ and /api/v1/bursting/ (tests/security/test_url_coverage.py
leaves these prefixes to this file).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks
from rest_framework.test import APIClient

from bursting.models import BurstEvent, BurstPolicy, BurstProposal, BurstState, InstanceType
from cluster import services as cluster_services
from cluster.models import Node, NodeEvent
from cluster.simulator.backend import SimulatorBackend
from jobs import services as job_services
from jobs.models import Job
from portal.models import User
from tests.security.test_url_coverage import normalized

LOGIN = "login"
# route: (sample url, method, anonymous, alice the researcher, bob the lead, olivia the operator)
TABLE = {
    "console/": ("/console/", "get", 302, 302, 302, 302),  # to the nodes page, which then asks who you are
    "console/nodes/": ("/console/nodes/", "get", LOGIN, 404, 404, 200),
    "console/nodes/<str:name>/": ("/console/nodes/{node}/", "get", LOGIN, 404, 404, 200),
    "console/queues/": ("/console/queues/", "get", LOGIN, 200, 200, 200),
    "console/bursts/": ("/console/bursts/", "get", LOGIN, 404, 404, 200),
    "console/bursts/<int:burst_id>/": ("/console/bursts/{burst}/", "get", LOGIN, 404, 404, 200),
    "console/bursts/<int:burst_id>/approve/": ("/console/bursts/{burst}/approve/", "post", LOGIN, 403, 403, 302),
    "console/bursts/<int:burst_id>/reject/": ("/console/bursts/{burst}/reject/", "post", LOGIN, 403, 403, 302),
    "console/policies/": ("/console/policies/", "get", LOGIN, 404, 404, 200),
    "console/policies/<int:policy_id>/": ("/console/policies/{policy}/", "get", LOGIN, 404, 404, 200),
    "console/recovery/": ("/console/recovery/", "get", LOGIN, 404, 404, 200),
    # olivia is let in and told there is no such snapshot (tests/recovery/test_console.py restores one)
    "console/recovery/<int:snapshot_id>/restore/": ("/console/recovery/999/restore/", "post", LOGIN, 403, 403, 302),
    "console/audit/": ("/console/audit/", "get", LOGIN, 404, 404, 200),
    "console/audit.csv": ("/console/audit.csv", "get", LOGIN, 404, 404, 200),
    "api/v1/bursting/bursts/": ("/api/v1/bursting/bursts/", "get", 401, 403, 403, 200),
    "api/v1/bursting/bursts/<pk>/": ("/api/v1/bursting/bursts/{burst}/", "get", 401, 403, 403, 200),
    "api/v1/bursting/bursts/<pk>/approve/": ("/api/v1/bursting/bursts/{burst}/approve/", "post", 401, 403, 403, 200),
    "api/v1/bursting/bursts/<pk>/reject/": ("/api/v1/bursting/bursts/{burst}/reject/", "post", 401, 403, 403, 200),
    "api/v1/bursting/instance-types/": ("/api/v1/bursting/instance-types/", "get", 401, 403, 403, 200),
    "api/v1/bursting/instance-types/<name>/": ("/api/v1/bursting/instance-types/g5.12xlarge/", "get", 401, 403, 403, 200),
    # Slurm's power-save programs: operators' tokens only; on the simulator even they are refused (no power-save nodes)
    "api/v1/bursting/slurm/resume/": ("/api/v1/bursting/slurm/resume/", "post", 401, 403, 403, 400),
    "api/v1/bursting/slurm/suspend/": ("/api/v1/bursting/slurm/suspend/", "post", 401, 403, 403, 400),
}
PREFIXES = ("console/", "api/v1/bursting/")


def walk(patterns: list[URLPattern | URLResolver], prefix: str = "") -> Iterator[str]:
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from walk(pattern.url_patterns, route)
        elif normalized(route).startswith(PREFIXES):
            yield normalized(route)


def test_every_console_and_bursting_route_is_in_the_table() -> None:
    assert set(walk(get_resolver().url_patterns)) == set(TABLE)


@pytest.fixture
def burst(grid: SimulatorBackend, policy: BurstPolicy, catalogue: dict[str, InstanceType]) -> BurstProposal:
    now = timezone.now()
    return BurstProposal.objects.create(
        policy=policy, instance_type=catalogue["g5.12xlarge"], pool="burst-a10g", gpus_per_node=4,
        price_per_hour=Decimal("5.672"), nodes=2, duration_s=3600, projected_cost=Decimal("11.34"),
        projection={"teams": [], "idle_cost": "11.34", "excluded": [], "not_started": [], "alternatives": [], "job_ids": [], "gpus_started": 0},
        trigger="8 GPUs waiting", created_at=now, expires_at=now + timedelta(hours=1),
    )  # fmt: skip


def call(client: Client | APIClient, url: str, method: str, api: bool) -> Any:
    if api:
        body = {"reason": "not now"} if url.endswith("reject/") else {}
        return getattr(client, method)(url, body, format="json")
    return getattr(client, method)(url, {"reason": "not now"} if method == "post" else {})


@pytest.mark.parametrize("route", list(TABLE))
def test_each_caller_gets_what_the_table_says(
    route: str,
    web: Callable[[User | None], Client],
    api: Callable[[User | None], APIClient],
    burst: BurstProposal,
    alice: User,
    bob: User,
    olivia: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    template, method, *expected = TABLE[route]
    node = Node.objects.order_by("name").first()
    assert node is not None
    url = template.format(node=node.name, burst=burst.pk, policy=burst.policy_id)
    is_api = url.startswith("/api/")
    for user, want in zip((None, alice, bob, olivia), expected, strict=True):
        BurstProposal.objects.filter(pk=burst.pk).update(state=BurstState.PROPOSED)  # each caller decides afresh
        client = api(user) if is_api else web(user)
        response = call(client, url, method, is_api)
        if want == LOGIN:
            assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), (
                user,
                response.status_code,
            )
        else:
            assert response.status_code == want, (user, response.status_code, response.content[:200])


def test_a_non_operator_cannot_approve_on_the_web_or_the_api(
    web: Callable[[User | None], Client], api: Callable[[User | None], APIClient], burst: BurstProposal, alice: User, bob: User
) -> None:
    for user in (alice, bob):
        assert web(user).post(f"/console/bursts/{burst.pk}/approve/").status_code == 403
        assert api(user).post(f"/api/v1/bursting/bursts/{burst.pk}/approve/", {}, format="json").status_code == 403
    assert BurstProposal.objects.get().state == "proposed"
    assert not BurstEvent.objects.exists()


def test_queues_show_a_member_only_their_own_teams(
    web: Callable[[User | None], Client], alice: User, carol: User, olivia: User, submit: Callable[..., Job]
) -> None:
    submit(alice, name="v")
    submit(carol, name="r")
    job_services.run_admission_cycle()  # render has no quota row: it shows once it uses GPUs
    assert b"render" not in web(alice).get("/console/queues/").content
    page = web(olivia).get("/console/queues/").content
    assert b"render" in page and b"vision" in page


def test_a_drain_is_previewed_with_the_jobs_it_affects_then_confirmed(
    web: Callable[[User | None], Client], olivia: User, alice: User, submit: Callable[..., Job]
) -> None:
    job = submit(alice, name="on-the-node")
    job_services.run_admission_cycle()
    job.refresh_from_db()
    node = next(iter(job.placement))
    client = web(olivia)
    preview = client.post(f"/console/nodes/{node}/", {"action": "drain", "reason": "fan failure"})
    assert preview.status_code == 200 and f"#{job.pk}".encode() in preview.content and b"confirm-action" in preview.content
    assert Node.objects.get(name=node).state == "ready"  # nothing happened yet
    missing = client.post(f"/console/nodes/{node}/", {"action": "drain", "reason": ""})
    assert b"a reason is required" in missing.content
    done = client.post(f"/console/nodes/{node}/", {"action": "drain", "reason": "fan failure", "confirm": "yes"})
    assert done.status_code == 302 and Node.objects.get(name=node).state == "draining"
    assert NodeEvent.objects.get(node__name=node).actor == "olivia"


def test_the_audit_log_filters_and_exports_csv(
    web: Callable[[User | None], Client], olivia: User, grid: SimulatorBackend
) -> None:
    node = Node.objects.order_by("name").first()
    assert node is not None
    cluster_services.cordon(node.name, "olivia", "firmware")
    client = web(olivia)
    page = client.get("/console/audit/?kind=node&actor=olivia")
    assert b"firmware" in page.content
    assert b"firmware" not in client.get("/console/audit/?kind=quota").content
    csv_text = client.get("/console/audit.csv?kind=node").content.decode()
    assert csv_text.splitlines()[0] == "at,kind,actor,subject,action,before,after,reason"
    assert "firmware" in csv_text and "olivia" in csv_text


def test_approving_on_the_web_records_who_and_starts_provisioning(
    web: Callable[[User | None], Client],
    olivia: User,
    burst: BurstProposal,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = web(olivia).post(f"/console/bursts/{burst.pk}/approve/", {"nodes": "1", "max_hours": "0.5"})
    assert response.status_code == 302
    burst.refresh_from_db()
    assert (burst.state, burst.approved_nodes, burst.decided_by) == ("provisioning", 1, "olivia")
    assert burst.approved_cost == Decimal("2.84")
