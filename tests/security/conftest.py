"""A portal with something behind every route: jobs, a token, a what-if run, an invoice, a burst proposal."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from billing import services as billing
from billing.models import Budget, Invoice, RateCard
from bursting.models import BurstPolicy, BurstProposal, InstanceType
from cluster.models import Node
from cluster.simulator.backend import SimulatorBackend
from jobs.models import Job, WhatIfRun
from notebooks import services as notebook_services
from portal.models import ApiToken, Team, User
from quotas.models import TeamQuota
from sweeps import services as sweep_services
from tests.billing.conftest import at, job_with_history  # noqa: F401 - fixture used by `world`
from tests.bursting.conftest import catalogue, policy  # noqa: F401 - fixtures used by `world`
from tests.security.test_url_coverage import SWEEP_SAMPLE

ROLES = ("anonymous", "alice", "carol", "bob", "olivia", "fiona")


@pytest.fixture
def callers(
    request: pytest.FixtureRequest, web: Callable[[User | None], Client], api: Callable[[User | None], APIClient]
) -> dict[str, tuple[Client, APIClient]]:
    """Per role: a signed-in browser and an API client with the role's own token."""
    out = {}
    for role in ROLES:
        user = None if role == "anonymous" else request.getfixturevalue(role)
        out[role] = (web(user), api(user))
    return out


@pytest.fixture
def invoice(grid: SimulatorBackend, vision: Team, alice: User, job_with_history: Callable[..., Job]) -> Invoice:  # noqa: F811
    """Vision's invoice for March 2025: ten A100 GPU-hours on-prem."""
    billing.add_rate_card(gpu_model="a100", pool_kind="onprem", per_gpu_hour=Decimal("2.00"), valid_from=date(2024, 1, 1))
    job_with_history(vision, alice, [("2025-03-03 00:00", "admitted"), ("2025-03-03 10:00", "succeeded")])
    billing.meter_month(date(2025, 3, 1), now=at("2025-04-02 00:00"))
    billing.set_budget(vision.pk, Decimal(100), [(Decimal(50), "notify"), (Decimal(100), "hold_new_jobs")])
    return billing.generate_invoice(vision.pk, date(2025, 3, 1))


@pytest.fixture
def burst(grid: SimulatorBackend, policy: BurstPolicy, catalogue: dict[str, InstanceType]) -> BurstProposal:  # noqa: F811
    now = timezone.now()
    return BurstProposal.objects.create(
        policy=policy, instance_type=catalogue["g5.12xlarge"], pool="burst-a10g", gpus_per_node=4,
        price_per_hour=Decimal("5.672"), nodes=2, duration_s=3600, projected_cost=Decimal("11.34"),
        projection={"teams": [], "idle_cost": "11.34", "excluded": [], "not_started": [], "alternatives": [], "job_ids": [], "gpus_started": 0},
        trigger="8 GPUs waiting", created_at=now, expires_at=now + timedelta(hours=1),
    )  # fmt: skip


@pytest.fixture
def world(
    alice: User,
    bob: User,
    carol: User,
    olivia: User,
    fiona: User,
    submit: Callable[..., Job],
    invoice: Invoice,
    burst: BurstProposal,
) -> dict[str, Any]:
    """The values sample URLs are filled with; every object belongs to team vision (alice's and bob's)."""
    node = Node.objects.select_related("pool").order_by("name").first()
    assert node is not None
    token, _ = ApiToken.issue(alice, "alice-laptop")
    rate_card = RateCard.objects.order_by("pk").first()
    assert rate_card is not None
    storage_rate = billing.add_storage_rate(
        per_gb_month=Decimal("0.02"), valid_from=date(2024, 1, 1), valid_until=date(2025, 1, 1)
    )
    return {
        "job": submit(alice, name="vision-alice-resnet").pk,
        "token": token.pk,
        "node": node.name,
        "pool": node.pool.name,
        "quota": TeamQuota.objects.get(team__slug="vision", gpu_model="a100").pk,
        "run": WhatIfRun.objects.create(requested_by=olivia, gpu_model="a100", days=1).pk,
        "invoice": invoice.pk,
        "burst": burst.pk,
        "policy": burst.policy_id,
        "user": alice.pk,
        "team": alice.teams.get().pk,
        "budget": Budget.objects.get(team__slug="vision").pk,
        "rate_card": rate_card.pk,
        "storage_rate": storage_rate.pk,
        "sweep": (sweep := sweep_services.create_sweep(alice, SWEEP_SAMPLE)).pk,
        "trial": sweep.trials.get(number=0).pk,
        "notebook": notebook_services.start(alice, {"team": "vision", "gpu_model": "a100"}).pk,
    }
