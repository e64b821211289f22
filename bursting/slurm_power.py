"""Bursting on Slurm: power-save cloud nodes (State=CLOUD in slurm.conf) are the burst nodes.

A Slurm cloud node is a slot declared in slurm.conf; an instance stands behind it only while it
is powered up. Slurm, not the portal, names the node, so a request under the portal's name is a
claim (MachineClaim, as with Cluster API) bound at once to a powered-down slot of the pool's
partition, and the slot is reported with the claim's name as `requested_as`, so the portal
renames its BurstNode to the slot.

Resume: approval -> `request` claims a slot and asks Slurm to power it up -> Slurm runs
ResumeProgram (deploy/slurm/grid-burst-power), which posts the slot's name to the portal ->
`resume` asks the cloud behind the slots for an instance under that name -> the instance boots,
its slurmd registers, Slurm shows the node up, and `instances` reports it running.

Suspend: the portal drains an idle burst node, then `release` asks Slurm to power it down ->
Slurm runs SuspendProgram, which posts the name -> `suspend` terminates the instance. When Slurm
suspends a node on its own (its SuspendTime), `suspend` releases the claim too, and the portal's
reconciliation records the node as gone.

Slurm calls ResumeProgram for any job that needs a powered-down node, also one submitted to Slurm
directly; the portal starts instances only for slots an approved burst has claimed, and refuses
the rest (Slurm marks those down after ResumeTimeout).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from bursting.models import MachineClaim
from bursting.provider import CloudProvider, Instance, SimulatedSlotCloud
from cluster.backends import BackendError, BackendRejected, BackendUnavailable
from cluster.backends.slurm import SlurmBackend
from cluster.backends.slurm.mapping import Power, PowerSlot
from portal.locks import transaction_lock

log = logging.getLogger(__name__)
OPEN = ("pending", "bound")
LOCK = "bursting-slurm-slots"


@dataclass
class PowerAnswer:
    """What the portal did with the nodes Slurm's ResumeProgram or SuspendProgram named."""

    done: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


class SlurmPowerSave(CloudProvider):
    """Burst nodes of the partitions in SLURM_CLOUD_PARTITIONS, by powering their State=CLOUD slots up and down."""

    def __init__(
        self,
        backend: SlurmBackend | None = None,
        cloud: CloudProvider | None = None,
        clock: Callable[[], datetime] = timezone.now,
    ) -> None:
        self.backend = backend or SlurmBackend()
        self.cloud = cloud or SimulatedSlotCloud(clock=clock)
        self.clock = clock

    def _slots(self, pool: str) -> list[PowerSlot]:
        if pool not in self.backend.config.cloud_partitions:
            raise BackendRejected(f"partition {pool!r} is not in SLURM_CLOUD_PARTITIONS")
        slots = [s for s in self.backend.power_slots() if pool in s.partitions]
        if not slots:
            raise BackendRejected(f"partition {pool!r} has no power-save nodes (State=CLOUD in slurm.conf)")
        return slots

    def check(self, pool: str, gpu_model: str, gpus: int) -> None:
        for slot in self._slots(pool):
            if (slot.gpu_model, slot.gpus) != (gpu_model, gpus):
                raise BackendRejected(f"pool {pool}: node {slot.name} has {slot.gpus}× {slot.gpu_model}, not {gpus}× {gpu_model}")

    def request(self, name: str, pool: str, instance_type: str) -> None:
        if MachineClaim.objects.filter(name=name).exists():
            return
        slots = self._slots(pool)
        with transaction.atomic():
            transaction_lock(LOCK)
            held = set(MachineClaim.objects.filter(state__in=(*OPEN, "failed")).values_list("node", flat=True))
            free = [s.name for s in slots if s.power == Power.OFF and s.name not in held]
            if not free:  # retryable, no attempt spent: a slot powering down is free again after SuspendTimeout
                raise BackendUnavailable(f"partition {pool}: no powered-down node is free now ({len(slots)} in slurm.conf)")
            claim = MachineClaim.objects.create(
                name=name, pool=pool, instance_type=instance_type, requested_at=self.clock(), node=free[0]
            )
        # Committed first: Slurm's ResumeProgram may ask the portal about the slot at once.
        try:
            self.backend.power_up(claim.node)
        except BackendError:
            MachineClaim.objects.filter(pk=claim.pk).delete()  # the claim stays only if Slurm took the power-up
            raise

    def instances(self) -> list[Instance]:
        cloud = {i.name: i for i in self.cloud.instances()}  # boots what is due first
        claims = list(MachineClaim.objects.filter(state__in=(*OPEN, "failed")).exclude(node=""))
        slots = {s.name: s for s in self.backend.power_slots()} if claims or cloud else {}
        found = []
        for claim in claims:
            state, error = _state(slots.get(claim.node), cloud.get(claim.node), claim)
            if state == "running" and claim.state == "pending":
                MachineClaim.objects.filter(pk=claim.pk, state="pending").update(state="bound")
            found.append(Instance(claim.node, claim.pool, state, error, requested_as=claim.name))
        self._release_strays(cloud, {c.node for c in claims}, slots)
        return found

    def _release_strays(self, cloud: dict[str, Instance], claimed: set[str], slots: dict[str, PowerSlot]) -> None:
        """An instance behind a slot no claim holds and Slurm has powered off: nobody pays for it any more."""
        for name, instance in cloud.items():
            slot = slots.get(name)
            if name not in claimed and instance.state != "terminated" and (slot is None or slot.power == Power.OFF):
                log.warning("slot %s: instance left behind after its power-down; terminating it", name)
                self.cloud.release(name)

    def release(self, name: str) -> None:
        claim = MachineClaim.objects.filter(Q(node=name) | Q(name=name), state__in=(*OPEN, "failed")).first()
        if claim is None:
            return
        try:
            self.backend.power_down(claim.node)
        except BackendRejected as exc:  # e.g. already powered down: nothing runs there to stop
            log.info("slot %s: power-down refused: %s", claim.node, exc)
        MachineClaim.objects.filter(pk=claim.pk).update(state="released")

    # --- called by ResumeProgram and SuspendProgram, through the API ------------------------------

    def resume(self, names: Iterable[str]) -> PowerAnswer:
        """Start an instance behind each slot an approved burst claimed; refuse the others, saying why."""
        answer = PowerAnswer()
        for name in names:
            claim = MachineClaim.objects.filter(node=name, state__in=OPEN).first()
            if claim is None:
                answer.refused[name] = "no approved burst holds this node: the portal starts cloud nodes only for its bursts"
                continue
            try:
                self.cloud.request(name, claim.pool, claim.instance_type)
            except BackendError as exc:
                MachineClaim.objects.filter(pk=claim.pk, state__in=OPEN).update(state="failed")
                answer.refused[name] = str(exc)
                continue
            answer.done.append(name)
        return answer

    def suspend(self, names: Iterable[str]) -> PowerAnswer:
        """Terminate the instance behind each slot; a claim still open (Slurm's own idle timer) ends too."""
        answer = PowerAnswer()
        for name in names:
            self.cloud.release(name)
            MachineClaim.objects.filter(node=name, state__in=(*OPEN, "failed")).update(state="released")
            answer.done.append(name)
        return answer


def _state(slot: PowerSlot | None, instance: Instance | None, claim: MachineClaim) -> tuple[str, str]:
    """The claimed slot as an instance state: pending until Slurm shows it up, failed if either side gave up."""
    if claim.state == "failed":
        return "failed", "the cloud refused the instance"
    if instance is not None and instance.state == "failed":
        return "failed", instance.error or "instance failed to boot"
    if slot is None:
        return "failed", f"slurm.conf no longer has node {claim.node}"
    if slot.power == Power.ON:
        return "running", ""
    if slot.power == Power.DOWN:
        return "failed", f"Slurm marked the node down while resuming it: {slot.reason or 'ResumeTimeout'}"
    return "pending", ""
