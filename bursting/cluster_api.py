"""The Cluster API provider: burst nodes are machines of a pool's MachineDeployment on Kubernetes.

Cluster API names machines and nodes itself, so the portal's chosen name is a claim
(MachineClaim): asking for a node adds a claim and sets the MachineDeployment's replicas to the
pool's open claims (the Kubernetes backend's `scale_pool`, which replaces with the
resourceVersion it read). A node that joins the pool is bound to the oldest open claim and
reported under its own name with the claim's name as `requested_as`, so the portal renames its
BurstNode to the node it got.

Scale-down of one particular node: Cluster API deletes first the machines annotated
`cluster.x-k8s.io/delete-machine`, so the provider annotates the Machine whose `status.nodeRef`
is the idle node, then lowers the replicas. Where Machines cannot be read (the API has no
`machines` resource, or RBAC forbids it) it can only lower the replicas: the node was already
cordoned and drained by the portal, but which machine goes is then the MachineDeployment's
deletePolicy (`Random` by default), which may be another node; the reconciliation that follows
reports the node that went as lost. docs/bursting.md says more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from bursting.models import MachineClaim
from bursting.provider import CloudProvider, Instance
from cluster.backends import BackendRejected
from cluster.backends.base import RemoteNode
from cluster.backends.kubernetes.backend import KubernetesBackend
from cluster.backends.kubernetes.errors import NotFoundError

log = logging.getLogger(__name__)
MACHINE_API = ("cluster.x-k8s.io", "v1beta2", "machines", "Machine")
DELETE_MACHINE = "cluster.x-k8s.io/delete-machine"
DEPLOYMENT_LABEL = "cluster.x-k8s.io/deployment-name"
OPEN = ("pending", "bound")


class ClusterApiCloud(CloudProvider):
    """Nodes of the pools in K8S_BURST_MACHINEDEPLOYMENTS, by scaling their MachineDeployments."""

    def __init__(self, backend: KubernetesBackend | None = None, clock: Callable[[], datetime] = timezone.now) -> None:
        self.backend = backend or KubernetesBackend()
        self.clock = clock

    def _target(self, pool: str) -> tuple[str, str]:
        target = self.backend.options.burst_machinedeployments.get(pool)
        if target is None:
            raise BackendRejected(f"{pool!r} has no MachineDeployment (K8S_BURST_MACHINEDEPLOYMENTS)")
        return target

    def check(self, pool: str, gpu_model: str, gpus: int) -> None:
        self._target(pool)
        for node in self._nodes(pool).values():  # an empty pool has nothing to compare with yet
            if (node.gpu_model, node.gpus) != (gpu_model, gpus):
                raise BackendRejected(f"pool {pool}: node {node.name} has {node.gpus}× {node.gpu_model}, not {gpus}× {gpu_model}")

    def request(self, name: str, pool: str, instance_type: str) -> None:
        if MachineClaim.objects.filter(name=name).exists():
            return
        self._target(pool)
        with transaction.atomic():  # the claim stays only if the MachineDeployment took the new replicas
            MachineClaim.objects.create(name=name, pool=pool, instance_type=instance_type, requested_at=self.clock())
            self._scale(pool)

    def _scale(self, pool: str) -> None:
        self.backend.scale_pool(pool, MachineClaim.objects.filter(pool=pool, state__in=OPEN).count())

    def _nodes(self, pool: str) -> dict[str, RemoteNode]:
        return {n.name: n for n in self.backend.list_nodes() if n.pool == pool}

    def instances(self) -> list[Instance]:
        found: list[Instance] = []
        pools = set(MachineClaim.objects.filter(state__in=(*OPEN, "failed")).values_list("pool", flat=True))
        for pool in sorted(pools):
            found.extend(self._pool_instances(pool, self._nodes(pool)))
        return found

    def _pool_instances(self, pool: str, nodes: dict[str, RemoteNode]) -> list[Instance]:
        self._bind(pool, nodes)
        self._time_out(pool, self.clock() - timedelta(seconds=settings.BURST_CAPI_JOIN_TIMEOUT_S))
        found = []
        for claim in MachineClaim.objects.filter(pool=pool, state__in=(*OPEN, "failed")):
            if claim.state == "pending":
                found.append(Instance(claim.name, pool, "pending"))
            elif claim.state == "failed":
                found.append(Instance(claim.name, pool, "failed", "no node joined in time"))
            elif claim.node in nodes:  # bound; one that has gone is not reported, so the portal marks it lost
                state = "pending" if nodes[claim.node].state == "down" else "running"
                found.append(Instance(claim.node, pool, state, requested_as=claim.name))
        return found

    def _bind(self, pool: str, nodes: dict[str, RemoteNode]) -> None:
        """Give each node no claim holds to the oldest pending claim of its pool."""
        held = set(MachineClaim.objects.filter(pool=pool).exclude(node="").values_list("node", flat=True))
        pending = list(MachineClaim.objects.filter(pool=pool, state="pending"))
        for node, claim in zip(sorted(set(nodes) - held), pending, strict=False):
            MachineClaim.objects.filter(pk=claim.pk, state="pending").update(state="bound", node=node)

    def _time_out(self, pool: str, before: datetime) -> None:
        MachineClaim.objects.filter(pool=pool, state="pending", requested_at__lt=before).update(state="failed")

    def release(self, name: str) -> None:
        claim = MachineClaim.objects.filter(node=name).first() or MachineClaim.objects.filter(name=name).first()
        if claim is None or claim.state == "released":
            return
        if claim.state == "bound":
            self._mark_for_deletion(claim.pool, claim.node)
        # A machine whose node never joined has no nodeRef: Cluster API deletes it before healthy ones.
        with transaction.atomic():
            MachineClaim.objects.filter(pk=claim.pk).update(state="released")
            self._scale(claim.pool)

    def _mark_for_deletion(self, pool: str, node: str) -> None:
        """Annotate the node's Machine so Cluster API deletes it first; without Machines, the node is only cordoned."""
        namespace, deployment = self._target(pool)
        api = self.backend.api
        group, version, plural, _ = MACHINE_API
        try:
            machines = api.call(
                f"list Machines of {namespace}/{deployment}", api.custom.list_namespaced_custom_object,
                group, version, namespace, plural, label_selector=f"{DEPLOYMENT_LABEL}={deployment}",
            )  # fmt: skip
        except (NotFoundError, BackendRejected) as exc:
            log.warning("release of %s: cannot read Machines (%s); the MachineDeployment chooses which machine goes", node, exc)
            self.backend.cordon(node, "released by the portal's burst; waiting for Cluster API")
            return
        machine = next(
            (m for m in machines.get("items") or [] if ((m.get("status") or {}).get("nodeRef") or {}).get("name") == node), None
        )
        if machine is None:
            raise BackendRejected(f"no Machine of {namespace}/{deployment} has the node {node}")
        body = {"metadata": {"annotations": {DELETE_MACHINE: "yes"}}}
        api.call(
            f"mark Machine {namespace}/{machine['metadata']['name']} for deletion", api.custom.patch_namespaced_custom_object,
            group, version, namespace, plural, machine["metadata"]["name"], body, _content_type="application/merge-patch+json",
        )  # fmt: skip
