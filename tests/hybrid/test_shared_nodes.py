"""Slurm and Kubernetes on the same GPU nodes, through the whole portal: the local Slurm cluster and
the fake Kubernetes API server list the same four nodes. One quota spans the jobs on both engines,
a node shows the GPUs either engine's jobs use, a drain drains it in both, and both jobs are billed."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest
from pytest_django import Settings
from rest_framework.test import APIClient

from billing.models import UsageRecord
from billing.services.usage import meter_job
from cluster import services as cluster_services
from cluster.backends import get_backend
from cluster.backends.hybrid import HybridBackend
from cluster.backends.kubernetes.manifests import JOB_ID_LABEL
from cluster.backends.slurm import SlurmBackend
from cluster.models import Node
from cluster.states import NodeState
from jobs import services as job_services
from jobs.models import Job
from jobs.states import JobState
from portal.models import User
from quotas.models import TeamQuota
from tests.k8s.fake_apiserver import FakeApiServer
from tests.slurm.conftest import sync_until, wait_for

pytestmark = [pytest.mark.slurm]
NS = "team-vision"
IMAGE = "nvcr.io/nvidia/pytorch:24.05-py3"
SHARED = {"gpu-a100-1": "NVIDIA-A100-SXM4-80GB", "gpu-a100-2": "NVIDIA-A100-SXM4-80GB"}
SHARED |= {"gpu-h100-1": "NVIDIA-H100-80GB-HBM3", "gpu-h100-2": "NVIDIA-H100-80GB-HBM3"}


def slurm_node(name: str) -> str:
    return subprocess.run(["scontrol", "show", "node", name], capture_output=True, text=True, check=False).stdout


@pytest.fixture
def hybrid(slurm_world: SlurmBackend, portal_on_fake: FakeApiServer, settings: Settings) -> Iterator[HybridBackend]:
    settings.CLUSTER_BACKEND = "slurm+kubernetes"
    for name, product in SHARED.items():
        portal_on_fake.add_node(name, product=product)
    backend = get_backend()
    assert isinstance(backend, HybridBackend)
    cluster_services.sync_nodes(backend)
    yield backend
    for name in SHARED:  # the Slurm cluster is shared with the other tests: leave every node schedulable
        if "DRAIN" in slurm_node(name):
            subprocess.run(["scontrol", "update", f"NodeName={name}", "State=RESUME"], check=False)


def submit(user: User, **fields: object) -> Job:
    raw = {"name": "job", "gpu_model": "a100", "walltime": 300, "command": ["sleep", "30"], **fields}
    return job_services.submit(user, raw)[0]


def test_one_quota_spans_both_engines_and_a_shared_node_shows_and_drains_in_both(
    hybrid: HybridBackend, portal_on_fake: FakeApiServer, alice: User, olivia: User
) -> None:
    fake = portal_on_fake
    TeamQuota.objects.filter(team__slug="vision", gpu_model="a100").update(guarantee=3, limit=3)
    on_slurm = submit(alice, name="sim", gpus_per_node=2)
    on_k8s = submit(alice, name="train", gpus_per_node=1, image=IMAGE, command=["python", "train.py"])
    over = submit(alice, name="third", gpus_per_node=1)
    job_services.run_admission_cycle()
    for job in (on_slurm, on_k8s):
        assert job_services.dispatch(job.pk)
        job.refresh_from_db()
    over.refresh_from_db()
    assert on_slurm.backend == on_k8s.backend == "slurm+kubernetes"
    assert on_slurm.backend_job_id.startswith("slurm:") and on_k8s.backend_job_id.startswith("kubernetes:")
    assert over.state == JobState.PENDING and over.reason == "quota"  # 2 GPUs on Slurm + 1 on Kubernetes = the limit

    # Best fit puts both on one node: the portal placed them, each engine runs its own there.
    [node] = set(on_slurm.placement) | set(on_k8s.placement)
    stored = fake.get("batch.volcano.sh", "jobs", NS, f"gp-{on_k8s.pk}")
    assert stored is not None
    affinity = stored["spec"]["tasks"][0]["template"]["spec"]["affinity"]["nodeAffinity"]
    assert affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"][0][
        "values"
    ] == [node]
    sync_until(on_slurm, {JobState.RUNNING})
    assert (hybrid.slurm.find_job(on_slurm.pk) or pytest.fail("not on Slurm")).node_names == (node,)  # pinned there
    fake.set_volcano_phase(NS, f"gp-{on_k8s.pk}", "Running")
    fake.add_pod(NS, f"gp-{on_k8s.pk}-main-0", node, gpus=1, labels={JOB_ID_LABEL: str(on_k8s.pk)})
    sync_until(on_k8s, {JobState.RUNNING})

    cluster_services.sync_nodes(hybrid)
    shared = Node.objects.get(name=node)
    assert (shared.gpus, shared.gpus_used, shared.pool.name) == (8, 3, "a100")  # Slurm's 2 and Kubernetes' 1

    drained = cluster_services.drain(node, olivia.username, "swap a fan")
    report = cluster_services.last_drain_report(drained)
    assert report is not None and report["evicted"] == [f"{NS}/gp-{on_k8s.pk}-main-0"]  # Kubernetes evicted its pod
    assert "DRAIN" in slurm_node(node)
    stored_node = fake.get("", "nodes", "", node)
    assert stored_node is not None and stored_node["spec"].get("unschedulable") is True
    cluster_services.sync_nodes(hybrid)
    assert Node.objects.get(name=node).state == NodeState.DRAINING

    for job in (on_slurm, on_k8s):
        meter_job(job.pk)
    billed = set(UsageRecord.objects.filter(team__slug="vision").values_list("job_id", flat=True))
    assert billed == {on_slurm.pk, on_k8s.pk}  # one bill for the team's work on both engines

    cluster_services.resume(node, olivia.username)
    wait_for(lambda: "DRAIN" not in slurm_node(node), 10, "Slurm to resume the node")
    stored_node = fake.get("", "nodes", "", node)
    assert stored_node is not None and not stored_node["spec"].get("unschedulable")


def test_each_job_goes_back_to_its_own_engine_to_be_cancelled_and_read(
    hybrid: HybridBackend, portal_on_fake: FakeApiServer, alice: User, carol: User, api: Callable[[User | None], APIClient]
) -> None:
    on_slurm = submit(alice, name="sim", gpus_per_node=1, command=["bash", "-c", "echo from-slurm; sleep 30"])
    on_k8s = submit(alice, name="train", gpus_per_node=1, image=IMAGE, command=["python", "train.py"])
    job_services.run_admission_cycle()
    for job in (on_slurm, on_k8s):
        assert job_services.dispatch(job.pk)
    sync_until(on_slurm, {JobState.RUNNING})
    wait_for(lambda: any("from-slurm" in line for line in job_services.read_log(on_slurm)), 20, "the Slurm job's log")
    assert api(carol).get(f"/api/v1/jobs/{on_slurm.pk}/").status_code == 404  # another team's job stays hidden

    for job in (on_slurm, on_k8s):
        assert job_services.cancel(alice, job).state == JobState.CANCELLED
        assert job_services.cancel_on_backend(job.pk)  # the hybrid routes it by the engine its id names
    assert portal_on_fake.get("batch.volcano.sh", "jobs", NS, f"gp-{on_k8s.pk}") is None  # deleted on Kubernetes
    remote = hybrid.slurm.find_job(on_slurm.pk)
    assert remote is None or remote.state in ("cancelled", "failed", "succeeded")
