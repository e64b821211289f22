"""Burst policies that can fire: a model only an elastic pool offers takes jobs, a policy refuses a pool that
cannot burst, a rejection holds for a cool-down, and operators edit policies in the console."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from django.test import Client
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings

from bursting import services
from bursting.models import BurstPolicy, BurstProposal, BurstState, InstanceType
from cluster import services as cluster_services
from cluster.simulator.backend import SimulatorBackend
from cluster.simulator.model import parse_pools
from jobs import services as job_services
from jobs.models import Job
from jobs.spec import SpecError
from portal.models import User
from tests.bursting.conftest import Clock

# The demo's grid: A10G only as an empty elastic cloud pool.
CLOUD_ONLY_A10G = "onprem-a100:onprem:a100:2x8,onprem-h100:onprem:h100:1x8,burst-a10g:cloud:a10g:0x4"
A10G_JOB = {"name": "render", "command": ["blender", "-b"], "gpu_model": "a10g", "gpus_per_node": 4, "walltime": 3600}


@pytest.fixture
def cloud_only_grid(db: None, settings: Settings) -> SimulatorBackend:
    settings.SIM_POOLS = CLOUD_ONLY_A10G
    backend = SimulatorBackend(pools=parse_pools(CLOUD_ONLY_A10G), speed=1.0, failure_rate=0.0)
    cluster_services.sync_nodes(backend)
    return backend


@pytest.fixture
def g5(db: None) -> InstanceType:
    return InstanceType.objects.create(
        name="g5.12xlarge", gpu_model="a10g", gpus=4, price_per_hour=Decimal("5.672"), pool="burst-a10g"
    )


@pytest.fixture
def a10g_policy(g5: InstanceType) -> BurstPolicy:
    created = BurstPolicy.objects.create(
        name="a10g-queue", gpu_model="a10g", trigger_pending_gpus=8, trigger_wait_s=0, trigger_window_s=0, max_nodes=4
    )
    created.instance_types.set([g5])
    return created


def test_a_model_only_an_elastic_pool_offers_is_refused_without_a_policy(cloud_only_grid: SimulatorBackend, alice: User) -> None:
    with pytest.raises(SpecError) as refused:
        job_services.submit(alice, A10G_JOB)
    assert "the grid has no a10g nodes" in str(refused.value.errors["gpu_model"])


def test_jobs_of_a_model_only_an_elastic_pool_offers_wait_for_the_burst(
    cloud_only_grid: SimulatorBackend, alice: User, a10g_policy: BurstPolicy, clock: Clock
) -> None:
    jobs = [job_services.submit(alice, A10G_JOB)[0] for _ in range(2)]  # refused before: no a10g node in the grid
    job_services.run_admission_cycle()
    assert {Job.objects.get(pk=j.pk).state for j in jobs} == {"pending"}
    with pytest.raises(SpecError) as too_big:  # the burst's nodes have 4 GPUs: that is the largest node of the model
        job_services.submit(alice, {**A10G_JOB, "gpus_per_node": 8})
    assert "gpus_per_node" in too_big.value.errors
    burst = services.evaluate_policy(a10g_policy, clock.now)
    assert burst is not None and (burst.pool, burst.nodes) == ("burst-a10g", 2)


def test_a_policy_refuses_a_pool_that_cannot_burst(
    cloud_only_grid: SimulatorBackend, olivia: User, a10g_policy: BurstPolicy
) -> None:
    onprem = InstanceType.objects.create(
        name="p4d.24xlarge", gpu_model="a100", gpus=8, price_per_hour=Decimal("32.77"), pool="onprem-a100"
    )
    unknown = InstanceType.objects.create(
        name="p3.8xlarge", gpu_model="v100", gpus=4, price_per_hour=Decimal("12.24"), pool="burst-v100"
    )
    for bad in (onprem, unknown):
        data = {"name": f"{bad.gpu_model}-queue", "gpu_model": bad.gpu_model, "enabled": True, "instance_types": [bad.name]}
        with pytest.raises(services.PolicyError) as refused:
            services.update_policy(olivia, None, data)
        assert "not an elastic cloud pool" in " ".join(refused.value.errors["pool"])
    assert list(BurstPolicy.objects.values_list("name", flat=True)) == ["a10g-queue"]
    wrong_shape = InstanceType.objects.create(
        name="g5.48xlarge", gpu_model="a10g", gpus=8, price_per_hour=Decimal("16.29"), pool="burst-a10g"
    )
    with pytest.raises(services.PolicyError) as refused:
        services.update_policy(olivia, a10g_policy.pk, {"instance_types": ["g5.12xlarge", "g5.48xlarge"]})
    assert "pool" in refused.value.errors and wrong_shape.name in refused.value.errors["pool"][0]
    saved = services.update_policy(olivia, a10g_policy.pk, {"instance_types": ["g5.12xlarge"], "max_nodes": "6"})
    assert saved.max_nodes == 6


def test_only_operators_change_policies(cloud_only_grid: SimulatorBackend, bob: User, a10g_policy: BurstPolicy) -> None:
    with pytest.raises(services.BurstForbidden):
        services.update_policy(bob, a10g_policy.pk, {"max_nodes": "1"})


def test_a_rejected_burst_is_not_proposed_again_until_the_cooldown_is_over(
    cloud_only_grid: SimulatorBackend,
    alice: User,
    olivia: User,
    a10g_policy: BurstPolicy,
    clock: Clock,
    settings: Settings,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    settings.BURST_REJECT_COOLDOWN_S = 3600
    for _ in range(2):
        job_services.submit(alice, A10G_JOB)
    first = services.evaluate_policy(a10g_policy, clock.now)
    assert first is not None
    services.reject(olivia, first.pk, "not today")
    assert services.evaluate_policy(a10g_policy, clock.advance(12)) is None  # one burst cycle later: nothing new
    assert services.evaluate_policy(a10g_policy, clock.advance(3000)) is None
    again = services.evaluate_policy(a10g_policy, clock.advance(3600))
    assert again is not None and again.pk != first.pk and again.state == BurstState.PROPOSED


def test_operators_edit_policies_in_the_console(
    cloud_only_grid: SimulatorBackend, web: Callable[[User | None], Client], olivia: User, a10g_policy: BurstPolicy
) -> None:
    InstanceType.objects.create(
        name="p4d.24xlarge", gpu_model="a100", gpus=8, price_per_hour=Decimal("32.77"), pool="onprem-a100"
    )
    client = web(olivia)
    listing = client.get("/console/policies/")
    assert listing.status_code == 200 and b"a10g-queue" in listing.content and b"burst-a10g" in listing.content
    form = client.get(f"/console/policies/{a10g_policy.pk}/")
    assert form.status_code == 200 and b'id="policy-form"' in form.content
    body = {"name": "a10g-queue", "gpu_model": "a10g", "enabled": "on", "trigger_pending_gpus": "4", "trigger_wait_s": "600",
            "trigger_window_s": "60", "min_nodes": "0", "max_nodes": "3", "max_duration_s": "7200", "idle_release_s": "300",
            "proposal_ttl_s": "1800", "auto_approve_below": "", "instance_types": ["g5.12xlarge"]}  # fmt: skip
    saved = client.post(f"/console/policies/{a10g_policy.pk}/", body)
    assert saved.status_code == 302 and saved["Location"] == "/console/policies/"
    a10g_policy.refresh_from_db()
    assert (a10g_policy.trigger_pending_gpus, a10g_policy.max_nodes, a10g_policy.trigger_window_s) == (4, 3, 60)
    refused = client.post(
        f"/console/policies/{a10g_policy.pk}/", {**body, "gpu_model": "a100", "instance_types": ["p4d.24xlarge"]}
    )
    assert refused.status_code == 200 and b"pool:" in refused.content and b"not an elastic cloud pool" in refused.content
    a10g_policy.refresh_from_db()
    assert a10g_policy.gpu_model == "a10g"


def test_the_policy_pages_are_not_found_for_non_operators(
    cloud_only_grid: SimulatorBackend,
    web: Callable[[User | None], Client],
    alice: User,
    bob: User,
    fiona: User,
    a10g_policy: BurstPolicy,
) -> None:
    for user in (alice, bob, fiona):
        assert web(user).get("/console/policies/").status_code == 404
        assert web(user).get(f"/console/policies/{a10g_policy.pk}/").status_code == 404
        assert web(user).post(f"/console/policies/{a10g_policy.pk}/", {"max_nodes": "1"}).status_code == 404
    assert BurstPolicy.objects.get().max_nodes == 4
    assert not BurstProposal.objects.exists()
