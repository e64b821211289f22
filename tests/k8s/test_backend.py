"""The Kubernetes backend against the fake API server: real HTTP, the real `kubernetes` client, real JSON."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.test import Client
from pytest_django import Settings
from rest_framework.test import APIClient

from cluster import services as cluster_services
from cluster.backends import get_backend
from cluster.backends.base import BackendRejected, BackendUnavailable
from cluster.backends.kubernetes.backend import KubernetesBackend
from cluster.backends.kubernetes.errors import ConflictError
from cluster.backends.kubernetes.manifests import JOB_ID_LABEL, PYTORCH_JOB_API, ManifestConfig
from cluster.models import Node
from cluster.states import NodeState, PoolKind
from jobs import services
from jobs.models import Job
from jobs.states import JobState
from notebooks import launch
from portal.models import User
from quotas import volcano
from quotas.models import TeamQuota
from tests.k8s.conftest import write_kubeconfig
from tests.k8s.fake_apiserver import FakeApiServer
from tests.k8s.test_manifests import SEED_QUEUE

pytestmark = pytest.mark.k8s
NS = "team-vision"


IMAGE = "nvcr.io/nvidia/pytorch:24.05-py3"


def admit(job: Job) -> Job:
    TeamQuota.objects.filter(team=job.team).update(limit=16)  # room for a two-node gang of 8-GPU nodes
    services.run_admission_cycle()
    job.refresh_from_db()
    assert job.state == JobState.ADMITTED, job.reason_detail
    return job


def sync(job: Job, k8s: KubernetesBackend) -> Job:
    services.sync_jobs(k8s)
    job.refresh_from_db()
    return job


def posts(fake: FakeApiServer, plural: str) -> int:
    return sum(1 for method, path in fake.store.requests if method == "POST" and path.split("?")[0].endswith(f"/{plural}"))


# --- jobs ---------------------------------------------------------------------------------------


def test_it_submits_a_pytorchjob_and_its_status_flows_into_the_portal(
    alice: User, submit: Callable[..., Job], fake: FakeApiServer, k8s: KubernetesBackend
) -> None:
    job = admit(submit(alice, image=IMAGE, kind="training", nodes=2, gpus_per_node=8))
    assert services.dispatch(job.pk, backend=k8s)
    job.refresh_from_db()
    name = f"gp-{job.pk}"
    assert (job.state, job.backend, job.backend_job_id) == (JobState.DISPATCHED, "kubernetes", f"pytorchjobs/{NS}/{name}")
    stored = fake.get("kubeflow.org", "pytorchjobs", NS, name)
    assert stored is not None and stored["metadata"]["labels"][JOB_ID_LABEL] == str(job.pk)

    fake.set_pytorch_condition(NS, name, "Created", "PyTorchJobCreated")
    assert sync(job, k8s).state == JobState.DISPATCHED
    fake.set_pytorch_condition(NS, name, "Running", "PyTorchJobRunning")
    assert sync(job, k8s).state == JobState.RUNNING
    fake.set_pytorch_condition(NS, name, "Succeeded", "PyTorchJobSucceeded", "job completed")
    job = sync(job, k8s)
    assert job.state == JobState.SUCCEEDED and job.finished_at is not None


def test_it_submits_a_volcano_job_and_a_failure_carries_its_reason(
    alice: User, submit: Callable[..., Job], fake: FakeApiServer, k8s: KubernetesBackend
) -> None:
    job = admit(submit(alice, image=IMAGE, kind="simulation", gpus_per_node=2))
    assert services.dispatch(job.pk, backend=k8s)
    name = f"gp-{job.pk}"
    stored = fake.get("batch.volcano.sh", "jobs", NS, name)
    assert stored is not None and stored["spec"]["queue"] == "team-vision-a100"

    fake.set_volcano_phase(NS, name, "Pending")
    assert sync(job, k8s).state == JobState.DISPATCHED
    fake.set_volcano_phase(NS, name, "Running")
    assert sync(job, k8s).state == JobState.RUNNING
    fake.set_volcano_phase(NS, name, "Failed", "PodFailed", "task main-0 exited with code 3")
    job = sync(job, k8s)
    assert job.state == JobState.FAILED
    assert "PodFailed" in job.reason_detail and "exited with code 3" in job.reason_detail


def test_the_exit_code_and_the_nodes_of_a_volcano_job_flow_into_the_portal_job(
    alice: User, submit: Callable[..., Job], fake: FakeApiServer, k8s: KubernetesBackend
) -> None:
    job = admit(submit(alice, image=IMAGE, kind="simulation", gpus_per_node=2))
    [chosen] = job.placement
    elsewhere = next(n for n in ("onprem-a100-01", "onprem-a100-02") if n != chosen)  # the scheduler chose otherwise
    assert services.dispatch(job.pk, backend=k8s)
    name = f"gp-{job.pk}"
    [pod] = fake.run_pods("batch.volcano.sh", "jobs", NS, name, [elsewhere])
    fake.set_volcano_phase(NS, name, "Running")
    job = sync(job, k8s)
    assert (job.state, job.placement, job.exit_code) == (JobState.RUNNING, {elsewhere: 2}, None)

    fake.end_pod(NS, pod, 3)
    fake.set_volcano_phase(NS, name, "Failed", "PodFailed", "task main failed")
    job = sync(job, k8s)
    assert (job.state, job.exit_code, job.placement) == (JobState.FAILED, 3, {elsewhere: 2})
    assert job.reason_detail.endswith("(exit code 3)")


def test_a_pytorchjob_gang_reports_both_nodes_and_the_first_failing_pods_exit_code(
    alice: User, submit: Callable[..., Job], fake: FakeApiServer, k8s: KubernetesBackend
) -> None:
    job = admit(submit(alice, image=IMAGE, kind="training", nodes=2, gpus_per_node=8))
    assert services.dispatch(job.pk, backend=k8s)
    name = f"gp-{job.pk}"
    master, worker = fake.run_pods("kubeflow.org", "pytorchjobs", NS, name, ["onprem-a100-02", "onprem-a100-01"])
    fake.set_pytorch_condition(NS, name, "Running", "PyTorchJobRunning")
    assert sync(job, k8s).placement == {"onprem-a100-01": 8, "onprem-a100-02": 8}

    fake.end_pod(NS, worker, 137, "OOMKilled")
    fake.end_pod(NS, master, 1)
    fake.set_pytorch_condition(NS, name, "Failed", "PyTorchJobFailed", "master failed")
    job = sync(job, k8s)
    assert (job.state, job.exit_code) == (JobState.FAILED, 1)  # the master's, first by name
    [remote] = k8s.list_jobs([job.pk])
    assert remote.node_names == ("onprem-a100-01", "onprem-a100-02") and remote.exit_code == 1


def test_pods_are_only_listed_for_jobs_that_left_pending(
    alice: User, submit: Callable[..., Job], fake: FakeApiServer, k8s: KubernetesBackend
) -> None:
    job = admit(submit(alice, image=IMAGE, kind="simulation"))
    k8s.submit(services.job_request(job))
    fake.set_volcano_phase(NS, f"gp-{job.pk}", "Pending")
    before = len(fake.store.requests)
    [remote] = k8s.list_jobs([job.pk])
    listed = [path for _, path in fake.store.requests[before:]]
    assert remote.node_names == () and not any("/pods" in path for path in listed)


def test_a_repeated_submit_finds_the_first_object_and_creates_nothing_new(
    alice: User, submit: Callable[..., Job], fake: FakeApiServer, k8s: KubernetesBackend
) -> None:
    job = admit(submit(alice, image=IMAGE))
    first = k8s.submit(services.job_request(job))  # the worker died right after this call
    assert services.dispatch(job.pk, backend=k8s)  # the task is delivered again: find_job sees it
    assert k8s.submit(services.job_request(job)) == first  # and a blind submit gets 409 → the same id
    job.refresh_from_db()
    assert job.backend_job_id == first
    assert len(fake.items("batch.volcano.sh", "jobs")) == 1


def test_a_name_taken_by_another_object_is_refused_not_adopted(
    alice: User, submit: Callable[..., Job], fake: FakeApiServer, k8s: KubernetesBackend
) -> None:
    job = admit(submit(alice, image=IMAGE))
    squatter: dict[str, Any] = {
        "apiVersion": "batch.volcano.sh/v1alpha1",
        "kind": "Job",
        "metadata": {"name": f"gp-{job.pk}", "namespace": NS, "labels": {JOB_ID_LABEL: "999999"}},
        "spec": {
            "tasks": [{"name": "x", "replicas": 1, "template": {"spec": {"containers": [{"name": "x", "image": "busybox"}]}}}]
        },
    }
    fake.add("batch.volcano.sh", "jobs", squatter)
    with pytest.raises(BackendRejected, match="is not portal job"):
        k8s.submit(services.job_request(job))


def test_cancel_deletes_the_job_and_its_pods_and_is_safe_to_repeat(
    alice: User, submit: Callable[..., Job], fake: FakeApiServer, k8s: KubernetesBackend
) -> None:
    fake.add_node("gpu-a100-1")
    job = admit(submit(alice, image=IMAGE, kind="simulation"))
    backend_id = k8s.submit(services.job_request(job))
    fake.run_pods("batch.volcano.sh", "jobs", NS, f"gp-{job.pk}", ["gpu-a100-1"])

    def volcano_job_uid() -> str:
        volcano_job = fake.get("batch.volcano.sh", "jobs", NS, f"gp-{job.pk}")
        assert volcano_job is not None
        uid: str = volcano_job["metadata"]["uid"]
        return uid

    for pod in fake.items("", "pods"):  # the Volcano controller owns the pods it makes
        fake.modify(
            "",
            "pods",
            NS,
            pod["metadata"]["name"],
            lambda p: p["metadata"].update(
                ownerReferences=[
                    {
                        "uid": volcano_job_uid(),
                        "kind": "Job",
                        "name": "x",
                        "apiVersion": "batch.volcano.sh/v1alpha1",
                    }
                ]
            ),
        )
    k8s.cancel(backend_id)
    k8s.cancel(backend_id)
    assert fake.items("batch.volcano.sh", "jobs") == [] and fake.items("", "pods") == []
    assert k8s.find_job(job.pk) is None


def test_it_reads_the_log_of_the_master_pod(
    alice: User, submit: Callable[..., Job], fake: FakeApiServer, k8s: KubernetesBackend
) -> None:
    fake.add_node("gpu-a100-1")
    fake.add_node("gpu-a100-2")
    job = admit(submit(alice, image=IMAGE, kind="training", nodes=2, gpus_per_node=8))
    backend_id = k8s.submit(services.job_request(job))
    fake.run_pods(
        "kubeflow.org", "pytorchjobs", NS, f"gp-{job.pk}", ["gpu-a100-1", "gpu-a100-2"], log="epoch 1\nepoch 2\nepoch 3\n"
    )
    assert k8s.read_log(backend_id, 1) == ["epoch 2", "epoch 3"]
    assert [n.gpus_used for n in k8s.list_nodes()] == [8, 8]


def test_a_jobs_service_is_owned_by_the_job_made_once_and_deleted_safely(
    alice: User, submit: Callable[..., Job], fake: FakeApiServer, k8s: KubernetesBackend
) -> None:
    job = admit(submit(alice, image=IMAGE, kind="interactive"))
    backend_id = k8s.submit(services.job_request(job))
    body = launch.kube_service(7, job.pk, NS, JOB_ID_LABEL)
    k8s.ensure_service(body, backend_id)
    k8s.ensure_service(body, backend_id)  # a repeat keeps the first
    [service] = fake.items("", "services")
    volcano_job = fake.get("batch.volcano.sh", "jobs", NS, f"gp-{job.pk}")
    assert volcano_job is not None and service["metadata"]["ownerReferences"][0]["uid"] == volcano_job["metadata"]["uid"]
    with pytest.raises(BackendRejected, match="must be in team-vision"):
        k8s.ensure_service(launch.kube_service(8, job.pk, "team-render", JOB_ID_LABEL), backend_id)

    k8s.delete_service(NS, "notebook-7")
    k8s.delete_service(NS, "notebook-7")  # gone already: not an error
    assert fake.items("", "services") == []
    k8s.ensure_service(body, backend_id)
    k8s.cancel(backend_id)  # the garbage collector takes the Service with its owner
    assert fake.items("", "services") == []


# --- nodes --------------------------------------------------------------------------------------


def test_cordon_and_resume_set_spec_unschedulable_with_the_reason(fake: FakeApiServer, k8s: KubernetesBackend) -> None:
    fake.add_node("gpu-a100-1")
    k8s.cordon("gpu-a100-1", "fan failure")
    node = fake.get("", "nodes", "", "gpu-a100-1")
    assert node is not None and node["spec"]["unschedulable"] is True
    assert [(n.state, n.reason) for n in k8s.list_nodes()] == [(NodeState.CORDONED, "fan failure")]
    k8s.resume("gpu-a100-1")
    node = fake.get("", "nodes", "", "gpu-a100-1")
    assert node is not None and "unschedulable" not in node["spec"]
    assert [(n.state, n.reason) for n in k8s.list_nodes()] == [(NodeState.READY, "")]
    with pytest.raises(BackendRejected, match="no node called"):
        k8s.cordon("nope", "x")


def test_drain_evicts_what_it_may_and_reports_the_pod_a_budget_protects(fake: FakeApiServer, k8s: KubernetesBackend) -> None:
    fake.add_namespace("gpu-operator")
    fake.add_node("gpu-a100-1")
    fake.add_pod(NS, "gp-7-main-0", "gpu-a100-1", labels={JOB_ID_LABEL: "7"}, gpus=4)
    fake.add_pod(NS, "serve-0", "gpu-a100-1", labels={"app": "serve"}, gpus=1)
    fake.add_pdb(NS, "serve", {"app": "serve"}, min_available=1)
    fake.add_pod("gpu-operator", "dcgm-exporter-abcde", "gpu-a100-1", owner_kind="DaemonSet")

    report = k8s.drain("gpu-a100-1", "replace GPU 3")

    assert report.evicted == [f"{NS}/gp-7-main-0"]
    assert list(report.blocked) == [f"{NS}/serve-0"] and "disruption budget" in report.blocked[f"{NS}/serve-0"]
    assert report.skipped == ["gpu-operator/dcgm-exporter-abcde"]
    assert {p["metadata"]["name"] for p in fake.items("", "pods")} == {"serve-0", "dcgm-exporter-abcde"}
    [node] = k8s.list_nodes()
    assert node.state == NodeState.DRAINING and "serve-0" in node.reason and node.reason.startswith("replace GPU 3")
    assert node.gpus_used == 1

    fake.remove("policy", "poddisruptionbudgets", NS, "serve")  # the budget is lifted: a second drain finishes
    assert k8s.drain("gpu-a100-1", "replace GPU 3").complete
    assert k8s.list_nodes()[0].reason == "replace GPU 3"


def node_with_a_protected_pod(fake: FakeApiServer) -> None:
    fake.add_node("gpu-a100-1")
    fake.add_pod(NS, "gp-7-main-0", "gpu-a100-1", labels={JOB_ID_LABEL: "7"}, gpus=4)
    fake.add_pod(NS, "serve-0", "gpu-a100-1", labels={"app": "serve"}, gpus=1)
    fake.add_pdb(NS, "serve", {"app": "serve"}, min_available=1)
    cluster_services.sync_nodes()


def test_the_pods_a_budget_kept_reach_the_operator_through_the_api_and_the_node_event(
    portal_on_fake: FakeApiServer, api: Callable[[User | None], APIClient], olivia: User, alice: User
) -> None:
    fake = portal_on_fake
    node_with_a_protected_pod(fake)
    url = "/api/v1/nodes/gpu-a100-1/drain/"
    assert api(alice).post(url, {"reason": "x"}).status_code == 403  # an outsider to operations: refused, nothing evicted
    assert len(fake.items("", "pods")) == 2

    answer = api(olivia).post(url, {"reason": "replace GPU 3"})
    assert answer.status_code == 200, answer.content
    report = answer.json()["drain_report"]
    assert answer.json()["state"] == NodeState.DRAINING and report["evicted"] == [f"{NS}/gp-7-main-0"]
    assert list(report["blocked"]) == [f"{NS}/serve-0"] and "disruption budget" in report["blocked"][f"{NS}/serve-0"]
    event = Node.objects.get(name="gpu-a100-1").events.first()
    assert event is not None and (event.actor, event.drain_report) == ("olivia", report)
    [listed, *_] = api(olivia).get("/api/v1/nodes/gpu-a100-1/events/").json()
    assert listed["drain_report"] == report

    fake.remove("policy", "poddisruptionbudgets", NS, "serve")  # the budget is lifted: the operator drains again
    again = api(olivia).post(url, {"reason": "replace GPU 3"}).json()["drain_report"]
    assert (again["blocked"], again["evicted"]) == ({}, [f"{NS}/serve-0"])
    assert Node.objects.get(name="gpu-a100-1").events.filter(to_state=NodeState.DRAINING).count() == 2


def test_the_console_warns_of_a_drain_a_budget_blocked_and_the_node_page_lists_the_pods(
    portal_on_fake: FakeApiServer, web: Callable[[User | None], Client], olivia: User, carol: User
) -> None:
    node_with_a_protected_pod(portal_on_fake)
    url = "/console/nodes/gpu-a100-1/"
    body = {"action": "drain", "reason": "replace GPU 3", "confirm": "yes"}
    assert web(carol).post(url, body).status_code == 404  # the console is operators' only
    assert len(portal_on_fake.items("", "pods")) == 2

    done = web(olivia).post(url, body, follow=True)
    text = done.content.decode()
    assert "drained, but 1 pod(s) not evicted: team-vision/serve-0" in text
    page = web(olivia).get(url).content.decode()
    assert 'id="drain-blocked"' in page and "team-vision/serve-0" in page and "disruption budget" in page


def test_a_node_that_is_not_ready_is_down(fake: FakeApiServer, k8s: KubernetesBackend) -> None:
    fake.add_node("gpu-h100-1", product="NVIDIA-H100-80GB-HBM3", ready=False)
    fake.add_node("cpu-1", gpus=0, product="")
    [node] = k8s.list_nodes()
    assert (node.name, node.gpu_model, node.state) == ("gpu-h100-1", "h100", NodeState.DOWN)
    assert "container runtime is down" in node.reason


def test_part_of_a_gpu_runs_on_a_mig_slice_of_a_node_the_sync_read_as_slices(
    fake: FakeApiServer, k8s: KubernetesBackend, alice: User
) -> None:
    fake.add_node("gpu-mig-1", gpus=28, resource="nvidia.com/mig-1g.10gb", pool="k8s-mig")
    fake.add_node("gpu-l4-1", gpus=16, product="NVIDIA-L4-SHARED", resource="nvidia.com/gpu.shared", pool="k8s-l4")
    cluster_services.sync_nodes(k8s)
    assert {(n.name, n.gpu_model, n.gpus) for n in Node.objects.all()} == {
        ("gpu-mig-1", "a100-1g.10gb", 28), ("gpu-l4-1", "l4-shared", 16),
    }  # fmt: skip
    TeamQuota.objects.create(team=alice.teams.get(), gpu_model="a100-1g.10gb", guarantee=7, limit=14)
    [job] = services.submit(
        alice, {"name": "eval", "image": IMAGE, "command": ["python", "eval.py"], "gpu_model": "a100", "gpu_fraction": 0.1}
    )
    assert job.gpu_model == "a100-1g.10gb"
    services.run_admission_cycle()
    assert services.dispatch(job.pk, backend=k8s)
    stored = fake.get("batch.volcano.sh", "jobs", NS, f"gp-{job.pk}")  # the fake API server checked it against the CRD
    assert stored is not None and stored["spec"]["queue"] == "team-vision-a100-1g-10gb"
    [task] = stored["spec"]["tasks"]
    pod = task["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/mig-1g.10gb": 1}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}


# --- bursting and conflicts --------------------------------------------------------------------


def test_scaling_a_machinedeployment_brings_nodes_the_watch_sees_arrive(fake: FakeApiServer, k8s: KubernetesBackend) -> None:
    fake.add_machinedeployment("capi", "burst-a10g", pool="burst-a10g", replicas=0)
    k8s.scale_pool("burst-a10g", 2)
    md = fake.get("cluster.x-k8s.io", "machinedeployments", "capi", "burst-a10g")
    assert md is not None and md["spec"]["replicas"] == 2

    assert k8s.wait_for_pool("burst-a10g", 2, timeout_s=10) == ["burst-a10g-0", "burst-a10g-1"]
    nodes = k8s.list_nodes()
    assert {(n.pool, n.pool_kind, n.gpu_model, n.gpus) for n in nodes} == {("burst-a10g", PoolKind.CLOUD, "a10g", 4)}

    k8s.scale_pool("burst-a10g", 0)
    assert k8s.list_nodes() == []
    with pytest.raises(BackendRejected, match="not an elastic pool"):
        k8s.scale_pool("onprem-a100", 1)


def test_a_stale_update_gets_409_and_is_retried_on_a_fresh_read(fake: FakeApiServer, k8s: KubernetesBackend) -> None:
    fake.add_machinedeployment("capi", "burst-a10g", pool="burst-a10g", replicas=1)
    fake.interfere("machinedeployments", "capi", "burst-a10g", times=1)  # another writer, once
    k8s.scale_pool("burst-a10g", 3)
    puts = [p for m, p in fake.store.requests if m == "PUT" and "burst-a10g" in p]
    assert len(puts) == 2  # the first replace lost the race (409), the second won
    md = fake.get("cluster.x-k8s.io", "machinedeployments", "capi", "burst-a10g")
    assert md is not None and md["spec"]["replicas"] == 3 and "fake/other-writer" in md["metadata"]["annotations"]


def test_conflicts_that_keep_coming_give_up_retryably_after_a_bounded_number_of_tries(
    fake: FakeApiServer, k8s: KubernetesBackend
) -> None:
    fake.add_machinedeployment("capi", "burst-a10g", pool="burst-a10g", replicas=1)
    fake.interfere("machinedeployments", "capi", "burst-a10g", times=100)
    with pytest.raises(ConflictError, match=r"conflict \(409\)") as caught:
        k8s.scale_pool("burst-a10g", 3)
    assert caught.value.retryable
    assert sum(1 for m, p in fake.store.requests if m == "PUT") == k8s.options.conflict_retries + 1
    md = fake.get("cluster.x-k8s.io", "machinedeployments", "capi", "burst-a10g")
    assert md is not None and md["spec"]["replicas"] == 1


# --- errors -------------------------------------------------------------------------------------


def test_the_api_going_away_and_coming_back(
    alice: User, submit: Callable[..., Job], fake: FakeApiServer, k8s: KubernetesBackend
) -> None:
    job = admit(submit(alice, image=IMAGE))
    fake.go_away()
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="unreachable") as caught:
        services.dispatch(job.pk, backend=k8s)
    assert caught.value.retryable and time.monotonic() - started < 5
    with pytest.raises(BackendUnavailable):
        k8s.list_nodes()
    job.refresh_from_db()
    assert job.state == JobState.ADMITTED  # left for the task's retry

    fake.come_back()
    assert services.dispatch(job.pk, backend=k8s)
    assert posts(fake, "jobs") == 1 and len(fake.items("batch.volcano.sh", "jobs")) == 1
    assert k8s.health()["ok"] is True


def test_a_403_is_a_refusal_with_an_rbac_hint(
    alice: User, submit: Callable[..., Job], fake: FakeApiServer, k8s: KubernetesBackend
) -> None:
    job = admit(submit(alice, image=IMAGE))
    fake.forbid("jobs")
    with pytest.raises(BackendRejected, match=r"forbidden \(403\)") as caught:
        k8s.submit(services.job_request(job))
    assert not caught.value.retryable and "RBAC" in str(caught.value) and "cannot create resource" in str(caught.value)
    fake.forbid("nodes")
    with pytest.raises(BackendRejected, match="export_cluster_config"):
        k8s.list_nodes()


def test_a_422_names_the_invalid_field(fake: FakeApiServer, k8s: KubernetesBackend) -> None:
    from cluster.backends.kubernetes.manifests import MACHINE_DEPLOYMENT_API

    fake.add_machinedeployment("capi", "burst-a10g", pool="burst-a10g")

    def bad(md: dict[str, Any]) -> dict[str, Any]:
        md["spec"]["replicas"] = "many"
        return md

    with pytest.raises(BackendRejected, match=r"invalid \(422\).*spec\.replicas") as caught:
        k8s.update_custom(MACHINE_DEPLOYMENT_API, "capi", "burst-a10g", bad)
    assert not caught.value.retryable


def test_the_fake_api_server_enforces_the_crds_cel_rules_on_updates(
    alice: User, submit: Callable[..., Job], fake: FakeApiServer, k8s: KubernetesBackend
) -> None:
    job = admit(submit(alice, image=IMAGE, kind="training", nodes=2, gpus_per_node=8))
    k8s.submit(services.job_request(job))  # created: the transition rule does not apply, and the create passes
    name = f"gp-{job.pk}"

    def relabel(obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"].setdefault("labels", {})["note"] = "kept-in-its-queue"
        return obj

    def move_queue(obj: dict[str, Any]) -> dict[str, Any]:
        obj["spec"]["runPolicy"]["schedulingPolicy"]["queue"] = "team-render-a100"
        return obj

    assert k8s.update_custom(PYTORCH_JOB_API, NS, name, relabel)["metadata"]["labels"]["note"] == "kept-in-its-queue"
    with pytest.raises(BackendRejected, match=r"spec\.runPolicy\.schedulingPolicy\.queue: .*is immutable"):
        k8s.update_custom(PYTORCH_JOB_API, NS, name, move_queue)
    stored = fake.get("kubeflow.org", "pytorchjobs", NS, name)
    assert stored is not None and stored["spec"]["runPolicy"]["schedulingPolicy"]["queue"] == "team-vision-a100"


def test_the_seeds_queue_is_refused_and_the_compiled_one_accepted(fake: FakeApiServer, k8s: KubernetesBackend) -> None:
    custom = k8s.api.custom
    with pytest.raises(BackendRejected, match="dispatchPolicy"):
        k8s.api.call(
            "create Queue",
            custom.create_cluster_custom_object,
            "scheduling.volcano.sh",
            "v1beta1",
            "queues",
            yaml.safe_load(SEED_QUEUE),
            field_validation="Strict",
        )
    valid = volcano.queue(volcano.QueueQuota("vision", "a100", guarantee=4, limit=12), ManifestConfig())
    k8s.api.call(
        "create Queue",
        custom.create_cluster_custom_object,
        "scheduling.volcano.sh",
        "v1beta1",
        "queues",
        valid,
        field_validation="Strict",
    )
    assert fake.get("scheduling.volcano.sh", "queues", "", "team-vision-a100") is not None


# --- configuration ------------------------------------------------------------------------------


def test_it_connects_through_a_kubeconfig_named_in_settings(fake: FakeApiServer, settings: Settings, tmp_path: Path) -> None:
    settings.K8S_KUBECONFIG = str(write_kubeconfig(fake.url, tmp_path))
    backend = get_backend("kubernetes")
    assert backend.health()["server"] == "v1.33.0-fake"

    settings.K8S_KUBECONFIG = str(tmp_path / "missing")
    with pytest.raises(BackendUnavailable, match="cannot load the Kubernetes configuration"):
        get_backend("kubernetes").list_nodes()


# --- telemetry exporters ----------------------------------------------------------------------


def test_exporter_pods_are_placed_by_the_daemonsets_label_then_by_name(fake: FakeApiServer, k8s: KubernetesBackend) -> None:
    fake.add_namespace("gpu-operator")
    fake.add_node("gpu-a100-1")
    fake.add_node("gpu-a100-2")
    fake.add_pod("gpu-operator", "nvidia-dcgm-exporter-xpn6b", "gpu-a100-1", labels={"app": "nvidia-dcgm-exporter"})
    fake.add_pod("gpu-operator", "dcgm-custom-q7w", "gpu-a100-2", labels={"app": "dcgm-custom"})
    fake.add_pod("gpu-operator", "nvidia-dcgm-exporter-zzzzz", "gpu-a100-2", labels={"app": "nvidia-dcgm-exporter"})
    wanted = ["nvidia-dcgm-exporter-xpn6b", "dcgm-custom-q7w", "nvidia-dcgm-exporter-gone1"]
    before = len(fake.store.requests)
    assert k8s.exporter_nodes(wanted) == {"nvidia-dcgm-exporter-xpn6b": "gpu-a100-1", "dcgm-custom-q7w": "gpu-a100-2"}
    asked = [path for _, path in fake.store.requests[before:]]
    # One listing of the DaemonSet's pods, then one lookup for each name it did not hold.
    assert len(asked) == 3 and "labelSelector=app%3Dnvidia-dcgm-exporter" in asked[0]
    assert all("fieldSelector=metadata.name" in path for path in asked[1:])
