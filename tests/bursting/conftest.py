"""A grid with cloud pools for bursting, a policy with the issue's instance types, and a clock to move.

Pools: on-prem A100 (2x8) and H100 (1x8) as in the shared tests, one on-prem A10G node (1x4, so
A10G jobs can be submitted and the first of them runs there), plus cloud pools for each
instance type: burst-a10g (g5.12xlarge, 4x A10G), burst-a10g-8 (g5.48xlarge, 8x A10G),
burst-v100 (p3.8xlarge, 4x V100) and burst-a100 (p4d.24xlarge, 8x A100).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from pytest_django import Settings

from bursting.models import BurstPolicy, InstanceType
from bursting.provider import SimulatedCloud
from cluster import services as cluster_services
from cluster.simulator.backend import SimulatorBackend
from cluster.simulator.model import parse_pools
from jobs import services as job_services
from jobs.models import Job
from portal.models import User

BURST_POOLS = (
    "onprem-a100:onprem:a100:2x8,onprem-h100:onprem:h100:1x8,onprem-a10g:onprem:a10g:1x4,burst-a10g:cloud:a10g:0x4,"
    "burst-a10g-8:cloud:a10g:0x8,burst-v100:cloud:v100:0x4,burst-a100:cloud:a100:0x8"
)
CATALOGUE = [
    ("g5.12xlarge", "a10g", 4, "5.6720", "burst-a10g"),
    ("g5.48xlarge", "a10g", 8, "16.2880", "burst-a10g-8"),
    ("p3.8xlarge", "v100", 4, "12.2400", "burst-v100"),
    ("p4d.24xlarge", "a100", 8, "32.7726", "burst-a100"),
]


class Clock:
    """The time every part of the burst machinery reads, moved by the test."""

    def __init__(self) -> None:
        self.now = timezone.now()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture(autouse=True)
def burst_settings(settings: Settings) -> None:
    settings.SIM_POOLS = BURST_POOLS
    settings.BURST_MAX_ATTEMPTS = 2
    settings.BURST_PROVISION_DELAY_S = 30
    settings.BURST_FAILURE_RATE = 0.0
    settings.BURST_CAPACITY_ERROR_RATE = 0.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def grid(db: None) -> SimulatorBackend:
    backend = SimulatorBackend(pools=parse_pools(BURST_POOLS), speed=1.0, failure_rate=0.0)
    cluster_services.sync_nodes(backend)
    return backend


@pytest.fixture
def cloud(grid: SimulatorBackend, clock: Clock) -> Callable[..., SimulatedCloud]:
    def make(failure_rate: float = 0.0, capacity_error_rate: float = 0.0, seed: int = 0, delay_s: float = 30) -> SimulatedCloud:
        return SimulatedCloud(grid, clock, delay_s, failure_rate, capacity_error_rate, seed)

    return make


@pytest.fixture
def catalogue(db: None) -> dict[str, InstanceType]:
    return {
        name: InstanceType.objects.create(name=name, gpu_model=model, gpus=gpus, price_per_hour=Decimal(price), pool=pool)
        for name, model, gpus, price, pool in CATALOGUE
    }


@pytest.fixture
def policy(catalogue: dict[str, InstanceType]) -> BurstPolicy:
    created = BurstPolicy.objects.create(
        name="a10g-queue",
        gpu_model="a10g",
        trigger_pending_gpus=8,
        trigger_wait_s=0,
        trigger_window_s=0,
        min_nodes=0,
        max_nodes=4,
        max_duration_s=4 * 3600,
        idle_release_s=600,
        proposal_ttl_s=3600,
    )
    created.instance_types.set(catalogue.values())
    return created


@pytest.fixture
def waiting(grid: SimulatorBackend) -> Callable[..., list[Job]]:
    """Submit `count` jobs of a user asking for A10G GPUs; beyond the one on-prem A10G node they wait."""

    def make(user: User, count: int, gpus: int = 4, walltime: int = 3600, model: str = "a10g") -> list[Job]:
        raw = {"name": "wait", "command": ["python", "train.py"], "gpu_model": model, "gpus_per_node": gpus, "walltime": walltime}
        return [job_services.submit(user, raw)[0] for _ in range(count)]

    return make
