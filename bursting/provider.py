"""Cloud providers a burst asks for nodes: a small interface, and the simulated one.

The simulated provider keeps its own records (SimCloudInstance), apart from the portal's
BurstNode rows, as a real cloud does: an instance takes a while to boot, sometimes fails to, and
sometimes the zone has no capacity. Draws are deterministic by seed and instance name, so a test
or a demo replays the same way. Requests are keyed by the node name the portal chose before
asking, so repeating a request never makes a second instance.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from bursting.models import SimCloudInstance
from cluster.backends import BackendError, BackendRejected
from cluster.simulator.backend import SimulatorBackend


class CapacityError(BackendError):
    """The provider has no capacity for this instance type now; asking again later can help."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


@dataclass(frozen=True)
class Instance:
    """A node as the provider sees it: pending (booting), running, failed or terminated.

    `requested_as` is set by providers that name nodes themselves (Cluster API): the name the
    portal asked under, when the node's own name differs.
    """

    name: str
    pool: str
    state: str
    error: str = ""
    requested_as: str = ""


class CloudProvider(abc.ABC):
    """Request, list and release named instances of a cloud pool."""

    @abc.abstractmethod
    def check(self, pool: str, gpu_model: str, gpus: int) -> None:
        """Raise BackendRejected if the pool cannot hold nodes of this shape."""

    @abc.abstractmethod
    def request(self, name: str, pool: str, instance_type: str) -> None:
        """Ask for one instance called `name`; asking again for the same name changes nothing."""

    @abc.abstractmethod
    def instances(self) -> list[Instance]:
        """Every instance the provider has (booting instances finish booting first)."""

    @abc.abstractmethod
    def release(self, name: str) -> None:
        """Terminate the instance; releasing an unknown or terminated one is not an error."""


def _unit(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) from the given parts."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class SimulatedCloud(CloudProvider):
    """The simulator's cloud: instances boot after a delay, may fail to, and may be refused for capacity."""

    def __init__(
        self,
        backend: SimulatorBackend | None = None,
        clock: Callable[[], datetime] = timezone.now,
        delay_s: float | None = None,
        failure_rate: float | None = None,
        capacity_error_rate: float | None = None,
        seed: int | None = None,
    ) -> None:
        self.backend = backend or SimulatorBackend()
        self.clock = clock
        self.delay_s = settings.BURST_PROVISION_DELAY_S if delay_s is None else delay_s
        self.failure_rate = settings.BURST_FAILURE_RATE if failure_rate is None else failure_rate
        self.capacity_error_rate = settings.BURST_CAPACITY_ERROR_RATE if capacity_error_rate is None else capacity_error_rate
        self.seed = settings.BURST_SEED if seed is None else seed

    def check(self, pool: str, gpu_model: str, gpus: int) -> None:
        spec = self.backend.cloud_pool(pool)
        if (spec.gpu_model, spec.gpus_per_node) != (gpu_model, gpus):
            raise BackendRejected(
                f"pool {pool}: its nodes have {spec.gpus_per_node}× {spec.gpu_model}, not {gpus}× {gpu_model} (SIM_POOLS)"
            )

    def request(self, name: str, pool: str, instance_type: str) -> None:
        if SimCloudInstance.objects.filter(name=name).exists():
            return
        self.backend.cloud_pool(pool)
        if _unit(self.seed, name, "capacity") < self.capacity_error_rate:
            raise CapacityError(f"InsufficientInstanceCapacity: no {instance_type} capacity for {name} right now")
        now = self.clock()
        failed = _unit(self.seed, name, "boot") < self.failure_rate
        SimCloudInstance.objects.get_or_create(
            name=name,
            defaults=dict(
                pool=pool,
                instance_type=instance_type,
                requested_at=now,
                ready_at=now + timedelta(seconds=self.delay_s),
                outcome="failed" if failed else "ok",
            ),
        )

    def instances(self) -> list[Instance]:
        now = self.clock()
        for booted in SimCloudInstance.objects.filter(state="pending", ready_at__lte=now):
            with transaction.atomic():
                if booted.outcome == "ok":
                    self.backend.add_cloud_node(booted.pool, booted.name)
                SimCloudInstance.objects.filter(pk=booted.pk, state="pending").update(
                    state="running" if booted.outcome == "ok" else "failed"
                )
        return [
            Instance(i.name, i.pool, i.state, "instance failed to boot" if i.state == "failed" else "")
            for i in SimCloudInstance.objects.exclude(state="terminated")
        ]

    def release(self, name: str) -> None:
        self.backend.remove_cloud_node(name)
        SimCloudInstance.objects.filter(name=name).update(state="terminated")
