"""The Cluster API provider against the fake Kubernetes API: scale a MachineDeployment, adopt the nodes that join, release one.

Two fakes: tests/k8s/fake_apiserver.py as it is (no Machines: Nodes follow the replicas by
position, the highest index going first), and `MachineFake` below, which also serves Machines
and deletes them as Cluster API's MachineSet does: annotated with `cluster.x-k8s.io/delete-machine`
first, then machines whose node never joined, then the newest.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from pytest_django import Settings

from bursting import services
from bursting.cluster_api import DELETE_MACHINE, ClusterApiCloud
from bursting.models import BurstEvent, BurstNode, BurstPolicy, BurstProposal, BurstState, InstanceType, MachineClaim, NodeStatus
from bursting.providers import get_provider
from bursting.slurm_power import SlurmPowerSave
from cluster import services as cluster_services
from cluster.backends import BackendRejected
from cluster.backends.kubernetes.backend import KubernetesBackend, KubeSettings
from cluster.models import Node
from tests.k8s.conftest import connect, write_kubeconfig
from tests.k8s.fake_apiserver import FakeApiServer, Obj, Resource, _delete

pytestmark = pytest.mark.k8s
POOL = "burst-a10g"
MD = ("capi", "burst-a10g")


class MachineFake(FakeApiServer):
    """The fake API server plus Cluster API Machines, deleted in Cluster API's order."""

    def __init__(self, join_s: float = 0.1) -> None:
        super().__init__()
        machines = Resource("cluster.x-k8s.io", "v1beta2", "machines", "Machine", True)
        self.store.resources[(machines.group, machines.plural, machines.version)] = machines
        self.serial = itertools.count(1)
        self.join_s = join_s
        self.joining = True

    def _machinedeployment_controller(self, res: Resource, md: Obj) -> None:
        if res.plural != "machinedeployments":
            return
        namespace, name = md["metadata"]["namespace"], md["metadata"]["name"]
        machines = self.store.bucket(self.resource("cluster.x-k8s.io", "machines"))
        mine = [m for (ns, _), m in machines.items() if ns == namespace and m["metadata"]["labels"]["md"] == name]
        wanted = int(md["spec"].get("replicas", 0))
        for _ in range(wanted - len(mine)):
            self._create_machine(namespace, name, md["metadata"].get("annotations", {}))
        for machine in sorted(mine, key=self._deletion_order)[: max(0, len(mine) - wanted)]:
            _delete(self.store, self.resource("cluster.x-k8s.io", "machines"), namespace, machine["metadata"]["name"])
            node = ((machine.get("status") or {}).get("nodeRef") or {}).get("name")
            if node and ("", node) in self.store.bucket(self.resource("", "nodes")):
                _delete(self.store, self.resource("", "nodes"), "", node)

    @staticmethod
    def _deletion_order(machine: Obj) -> tuple[int, int]:
        annotated = DELETE_MACHINE in (machine["metadata"].get("annotations") or {})
        joined = bool((machine.get("status") or {}).get("nodeRef"))
        return (0 if annotated else 1 if not joined else 2, -int(machine["metadata"]["labels"]["serial"]))

    def _create_machine(self, namespace: str, md: str, annotations: dict[str, str]) -> None:
        serial = next(self.serial)
        name = f"{md}-m{serial:03d}"
        labels = {"cluster.x-k8s.io/deployment-name": md, "md": md, "serial": str(serial)}
        meta = {"name": name, "namespace": namespace, "labels": labels, "uid": f"uid-{name}"}
        machine: Obj = {"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "metadata": meta, "spec": {}}
        self.store.put(self.resource("cluster.x-k8s.io", "machines"), machine, "ADDED")
        if self.joining:
            threading.Thread(target=self._join, args=(namespace, name, annotations), daemon=True).start()

    def _join(self, namespace: str, machine: str, annotations: dict[str, str]) -> None:
        time.sleep(self.join_s)
        node = f"ip-10-0-{machine.rsplit('m', 1)[1]}.ec2.internal"
        with self.store.cond:
            if (namespace, machine) not in self.store.bucket(self.resource("cluster.x-k8s.io", "machines")):
                return  # deleted before it joined
            self.add_node(
                node, gpus=int(annotations["fake/gpus"]), product=annotations["fake/product"], pool=annotations["fake/pool"]
            )
            self.modify(
                "cluster.x-k8s.io", "machines", namespace, machine, lambda m: m.update(status={"nodeRef": {"name": node}})
            )


def start(fake: FakeApiServer) -> Iterator[KubernetesBackend]:
    fake.start()
    fake.add_namespace("capi")
    fake.add_machinedeployment(*MD, pool=POOL, gpus=4, product="NVIDIA-A10G")
    api = connect(fake.url)
    yield KubernetesBackend(api, KubeSettings(burst_machinedeployments={POOL: MD}))
    api.close()
    fake.stop()


@pytest.fixture
def machines() -> MachineFake:
    return MachineFake()


@pytest.fixture
def capi(machines: MachineFake) -> Iterator[KubernetesBackend]:
    yield from start(machines)


@pytest.fixture
def plain() -> FakeApiServer:
    return FakeApiServer()


@pytest.fixture
def capi_plain(plain: FakeApiServer) -> Iterator[KubernetesBackend]:
    yield from start(plain)


def replicas(fake: FakeApiServer) -> int:
    md = fake.get("cluster.x-k8s.io", "machinedeployments", *MD)
    assert md is not None
    return int(md["spec"]["replicas"])


def joined(backend: KubernetesBackend, count: int) -> list[str]:
    names = backend.wait_for_pool(POOL, count, timeout_s=10)
    assert len(names) == count, names
    return names


@pytest.fixture
def provisioning(db: None, policy: BurstPolicy, catalogue: dict[str, InstanceType]) -> BurstProposal:
    """A burst of two g5.12xlarge nodes, approved: its BurstNodes carry the portal's names."""
    now = timezone.now()
    burst = BurstProposal.objects.create(
        policy=policy, instance_type=catalogue["g5.12xlarge"], pool=POOL, gpus_per_node=4, price_per_hour="5.672",
        nodes=2, duration_s=3600, projected_cost="11.34", trigger="test", expires_at=now + timedelta(hours=1),
        state=BurstState.APPROVED, approved_nodes=2,
    )  # fmt: skip
    services.start_provisioning(burst, "olivia", now)
    return burst


def test_asking_for_nodes_sets_replicas_to_the_open_claims_and_asking_again_changes_nothing(
    db: None, capi: KubernetesBackend, machines: MachineFake
) -> None:
    cloud = ClusterApiCloud(capi)
    cloud.request("burst-a10g-b1-01", POOL, "g5.12xlarge")
    cloud.request("burst-a10g-b1-02", POOL, "g5.12xlarge")
    cloud.request("burst-a10g-b1-01", POOL, "g5.12xlarge")
    assert replicas(machines) == 2
    assert {i.state for i in cloud.instances()} <= {"pending", "running"}

    nodes = joined(capi, 2)
    found = sorted(cloud.instances(), key=lambda i: i.requested_as)
    assert [(i.requested_as, i.state) for i in found] == [("burst-a10g-b1-01", "running"), ("burst-a10g-b1-02", "running")]
    assert sorted(i.name for i in found) == nodes


def test_the_burst_nodes_take_the_names_of_the_nodes_that_joined(
    capi: KubernetesBackend, machines: MachineFake, provisioning: BurstProposal
) -> None:
    cloud = ClusterApiCloud(capi)
    assert services.provision(provisioning.pk, cloud) == 2
    nodes = joined(capi, 2)

    counts = services.reconcile(cloud, timezone.now())

    assert counts["ready"] == 2
    assert sorted(BurstNode.objects.values_list("name", "status")) == [(n, NodeStatus.READY) for n in nodes]
    reasons = sorted(BurstEvent.objects.filter(action="node_joined").values_list("reason", flat=True))
    b = provisioning.pk
    assert reasons == [f"requested as burst-a10g-b{b}-01", f"requested as burst-a10g-b{b}-02"]
    services.settle(provisioning, timezone.now())
    assert BurstProposal.objects.get(pk=provisioning.pk).state == BurstState.ACTIVE
    assert services.reconcile(cloud, timezone.now()) == {"ready": 0, "failed": 0, "orphans": 0, "lost": 0}


def test_releasing_an_idle_node_marks_its_machine_so_that_one_goes_not_the_newest(
    capi: KubernetesBackend, machines: MachineFake, provisioning: BurstProposal
) -> None:
    cloud = ClusterApiCloud(capi)
    services.provision(provisioning.pk, cloud)
    older, newer = joined(capi, 2)
    services.reconcile(cloud, timezone.now())

    services.release_node(BurstNode.objects.get(name=older), cloud, timezone.now(), "idle")

    assert replicas(machines) == 1
    assert joined(capi, 1) == [newer]
    assert [m["metadata"].get("annotations", {}) for m in machines.items("cluster.x-k8s.io", "machines")] == [{}]
    assert BurstNode.objects.get(name=older).status == NodeStatus.RELEASED
    assert services.reconcile(cloud, timezone.now())["lost"] == 0
    assert BurstNode.objects.get(name=newer).status == NodeStatus.READY


def test_without_machines_a_release_cordons_the_node_and_lowers_the_replicas(
    db: None, capi_plain: KubernetesBackend, plain: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    cloud = ClusterApiCloud(capi_plain)
    cloud.request("a", POOL, "g5.12xlarge")
    cloud.request("b", POOL, "g5.12xlarge")
    joined(capi_plain, 2)
    cloud.instances()
    newest = MachineClaim.objects.get(name="b").node

    cloud.release(newest)  # the fake deletes the highest index: here the node released (see docs/bursting.md)

    assert replicas(plain) == 1
    assert "cannot read Machines" in caplog.text
    assert joined(capi_plain, 1) == [MachineClaim.objects.get(name="a").node]
    assert [i.requested_as for i in cloud.instances()] == ["a"]


def test_a_machine_whose_node_never_joins_fails_and_its_replica_is_given_back(
    db: None, capi: KubernetesBackend, machines: MachineFake, settings: Settings
) -> None:
    settings.BURST_CAPI_JOIN_TIMEOUT_S = 60
    machines.joining = False
    clock = [timezone.now()]
    cloud = ClusterApiCloud(capi, clock=lambda: clock[0])
    cloud.request("burst-a10g-b1-01", POOL, "g5.12xlarge")
    clock[0] += timedelta(seconds=61)

    assert [(i.name, i.state) for i in cloud.instances()] == [("burst-a10g-b1-01", "failed")]
    cloud.release("burst-a10g-b1-01")
    assert replicas(machines) == 0 and machines.items("cluster.x-k8s.io", "machines") == []


def test_it_refuses_a_pool_without_a_machinedeployment_or_of_another_shape(
    db: None, capi: KubernetesBackend, machines: MachineFake
) -> None:
    cloud = ClusterApiCloud(capi)
    with pytest.raises(BackendRejected, match="K8S_BURST_MACHINEDEPLOYMENTS"):
        cloud.request("x", "burst-v100", "p3.8xlarge")
    cloud.check(POOL, "a10g", 4)  # empty pool: nothing to compare with
    cloud.request("a", POOL, "g5.12xlarge")
    joined(capi, 1)
    with pytest.raises(BackendRejected, match="4× a10g, not 8× a10g"):
        cloud.check(POOL, "a10g", 8)


def test_the_provider_follows_the_cluster_backend(settings: Settings) -> None:
    settings.CLUSTER_BACKEND = "kubernetes"
    assert isinstance(get_provider(), ClusterApiCloud)
    settings.CLUSTER_BACKEND = "slurm"
    assert isinstance(get_provider(), SlurmPowerSave)


def test_a_pod_a_disruption_budget_protects_keeps_an_idle_burst_node_and_the_operator_is_told_which(
    capi: KubernetesBackend, machines: MachineFake, provisioning: BurstProposal, settings: Settings, tmp_path: Path
) -> None:
    """The portal drains through its Kubernetes backend; the drain report's blocked pods hold the release."""
    settings.K8S_KUBECONFIG = str(write_kubeconfig(machines.url, tmp_path))
    settings.CLUSTER_BACKEND = "kubernetes"
    settings.K8S_BURST_MACHINEDEPLOYMENTS = f"{POOL}={MD[0]}/{MD[1]}"
    cloud = ClusterApiCloud(capi)
    services.provision(provisioning.pk, cloud)
    older, _ = joined(capi, 2)
    services.reconcile(cloud, timezone.now())
    cluster_services.sync_nodes()
    machines.add_namespace("team-vision")
    machines.add_pod("team-vision", "serve-0", older, labels={"app": "serve"}, gpus=0)
    machines.add_pdb("team-vision", "serve", {"app": "serve"}, min_available=1)
    node = BurstNode.objects.get(name=older)

    assert services.release_node(node, cloud, timezone.now(), "idle") == 0
    assert services.release_node(BurstNode.objects.get(name=older), cloud, timezone.now(), "idle") == 0  # told once

    node.refresh_from_db()
    assert node.status == NodeStatus.READY and replicas(machines) == 2
    [waits] = BurstEvent.objects.filter(action="release_waits")
    assert waits.node == older and "team-vision/serve-0" in waits.reason and "disruption budget" in waits.reason
    assert waits.after is not None and list(waits.after["blocked"]) == ["team-vision/serve-0"] and node.error == waits.reason
    report = cluster_services.last_drain_report(Node.objects.get(name=older))
    assert report is not None and report["blocked"] == waits.after["blocked"]

    machines.remove("policy", "poddisruptionbudgets", "team-vision", "serve")  # the budget is lifted
    assert services.release_node(node, cloud, timezone.now(), "idle") == 1
    node.refresh_from_db()
    assert (node.status, node.error) == (NodeStatus.RELEASED, "") and replicas(machines) == 1
    assert not machines.items("", "pods")  # evicted before the machine went
