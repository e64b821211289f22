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
import logging
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from bursting.models import SimCloudInstance
from cluster.backends import BackendError, BackendRejected
from cluster.simulator.backend import SimulatorBackend

log = logging.getLogger(__name__)


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
        self.backend = backend or SimulatorBackend()  # SimulatedSlotCloud never uses it
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
        if SimCloudInstance.objects.filter(name=name).exclude(state="terminated").exists():
            return
        self._known_pool(pool)
        if _unit(self.seed, name, "capacity") < self.capacity_error_rate:
            raise CapacityError(f"InsufficientInstanceCapacity: no {instance_type} capacity for {name} right now")
        now = self.clock()
        failed = _unit(self.seed, name, "boot") < self.failure_rate
        # A Slurm slot's name comes back once its earlier instance has gone: that is a new instance.
        SimCloudInstance.objects.update_or_create(
            name=name,
            defaults=dict(
                pool=pool,
                instance_type=instance_type,
                requested_at=now,
                ready_at=now + timedelta(seconds=self.delay_s),
                outcome="failed" if failed else "ok",
                state="pending",
            ),
        )

    def instances(self) -> list[Instance]:
        now = self.clock()
        for booted in SimCloudInstance.objects.filter(state="pending", ready_at__lte=now):
            with transaction.atomic():
                problem = self._joined(booted.pool, booted.name) if booted.outcome == "ok" else "instance failed to boot"
                SimCloudInstance.objects.filter(pk=booted.pk, state="pending").update(state="failed" if problem else "running")
                if problem:
                    log.warning("simulated instance %s: %s", booted.name, problem)
        return [
            Instance(i.name, i.pool, i.state, "instance failed to boot" if i.state == "failed" else "")
            for i in SimCloudInstance.objects.exclude(state="terminated")
        ]

    def release(self, name: str) -> None:
        self._left(name)
        SimCloudInstance.objects.filter(name=name).update(state="terminated")

    # What a booted or terminated instance means to the grid: in the simulator, a node of its pool.

    def _known_pool(self, pool: str) -> None:
        self.backend.cloud_pool(pool)

    def _joined(self, pool: str, name: str) -> str:
        """The booted instance joins the grid; returns why it could not ('' when it did)."""
        self.backend.add_cloud_node(pool, name)
        return ""

    def _left(self, name: str) -> None:
        self.backend.remove_cloud_node(name)


class SimulatedSlotCloud(SimulatedCloud):
    """The simulated cloud behind Slurm's power-save slots: instances are named after the slot.

    A booted instance runs BURST_SIM_BOOT_COMMAND with the slot's name (on the dev cluster it starts
    the slot's slurmd, which registers with slurmctld as a real instance's would); a terminated one
    runs BURST_SIM_HALT_COMMAND. Without a boot command nothing registers, and Slurm marks the node
    down after its ResumeTimeout.
    """

    def __init__(self, clock: Callable[[], datetime] = timezone.now, **draws: Any) -> None:
        super().__init__(backend=None, clock=clock, **draws)
        self.boot_command = shlex.split(settings.BURST_SIM_BOOT_COMMAND)
        self.halt_command = shlex.split(settings.BURST_SIM_HALT_COMMAND)

    def _known_pool(self, pool: str) -> None:
        pass  # the slot exists in slurm.conf: SlurmPowerSave checked it

    def _joined(self, pool: str, name: str) -> str:
        return _run(self.boot_command, name)

    def _left(self, name: str) -> None:
        if problem := _run(self.halt_command, name):
            log.warning("simulated instance %s: halting it: %s", name, problem)


def _run(command: list[str], name: str) -> str:
    """Run the hook with the instance's name last; why it failed, or ''."""
    if not command:
        return ""
    try:
        done = subprocess.run([*command, name], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{command[0]}: {exc}"
    return "" if done.returncode == 0 else f"{command[0]} exited {done.returncode}: {(done.stderr or done.stdout).strip()[:200]}"
