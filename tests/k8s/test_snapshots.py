"""Checkpoint snapshots on Kubernetes: the objects are valid, and against the fake API server a night's
VolumeSnapshot is taken, waited for, recorded and listed; a restore makes a claim from it and the job
dispatched again mounts that claim."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from django.core.management import call_command
from django.test import Client
from pytest_django import Settings

from cluster.backends import get_backend
from cluster.backends.hybrid import HybridBackend
from cluster.backends.kubernetes import snapshots
from cluster.backends.kubernetes.backend import KubernetesBackend
from cluster.backends.kubernetes.manifests import ManifestConfig
from jobs import services as job_services
from jobs.models import Job
from jobs.states import JobState
from portal.models import Team, User
from recovery import services
from recovery.models import Restore, Snapshot, SnapshotKind, SnapshotState
from tests.k8s.fake_apiserver import FakeApiServer
from tests.k8s.snapshot_schemas import PVC_DATA_SOURCE, SNAPSHOT_CRDS

NS = "team-vision"
CLASS = "csi-checkpoints"


def valid(obj: dict[str, Any]) -> None:
    crd = next(c for c in SNAPSHOT_CRDS if c.kind == obj["kind"])
    assert crd.errors(obj) == [] and crd.unknown_fields(obj) == []


def test_the_snapshot_its_class_and_the_restored_claim_are_valid_objects() -> None:
    config = ManifestConfig(checkpoint_claim="checkpoints")
    snap = snapshots.volume_snapshot("vision", "checkpoints-20260102-0300", config, CLASS)
    valid(snap)
    assert snap["metadata"]["namespace"] == NS and snap["spec"]["source"] == {"persistentVolumeClaimName": "checkpoints"}
    klass = snapshots.snapshot_class(CLASS, "rook-ceph.cephfs.csi.ceph.com")
    valid(klass)
    assert klass["deletionPolicy"] == "Retain"

    source = {
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "fast", "resources": {"requests": {"storage": "100Gi"}}}
    }
    claim = snapshots.restored_claim("vision", 42, "checkpoints-20260102-0300", 5 * 2**30, source, config)
    kubernetes_validate.validate(claim, "1.33", strict=True)
    jsonschema.validate(claim["spec"]["dataSource"], PVC_DATA_SOURCE)
    assert claim["metadata"]["name"] == "gp-42-checkpoints-20260102-0300"
    assert claim["spec"]["resources"]["requests"]["storage"] == str(100 * 2**30)  # never smaller than the team's claim
    assert (claim["spec"]["accessModes"], claim["spec"]["storageClassName"]) == (["ReadWriteMany"], "fast")


@pytest.mark.parametrize(("text", "size"), [("10Gi", 10 * 2**30), ("1.5Ki", 1536), ("500M", 500 * 10**6), ("7", 7)])
def test_storage_quantities_are_read_in_bytes(text: str, size: int) -> None:
    assert snapshots.parse_quantity(text) == size


def test_a_snapshot_without_a_class_or_a_class_without_a_driver_is_refused_naming_the_setting() -> None:
    with pytest.raises(snapshots.SnapshotError, match="K8S_SNAPSHOT_CLASS"):
        snapshots.volume_snapshot("vision", "checkpoints-1", ManifestConfig(), "")
    with pytest.raises(snapshots.SnapshotError, match="K8S_SNAPSHOT_DRIVER"):
        snapshots.snapshot_class(CLASS, "")
    with pytest.raises(snapshots.SnapshotError, match="not a storage quantity"):
        snapshots.parse_quantity("lots")


def test_the_export_writes_the_snapshot_class_and_its_rbac(vision: Team, settings: Settings) -> None:
    settings.K8S_SNAPSHOT_CLASS, settings.K8S_SNAPSHOT_DRIVER = CLASS, "ebs.csi.aws.com"
    out = StringIO()
    call_command("export_cluster_config", "--format", "k8s", stdout=out)
    objects = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out.getvalue())}
    klass = objects[("VolumeSnapshotClass", CLASS)]
    valid(klass)
    assert (klass["driver"], klass["deletionPolicy"]) == ("ebs.csi.aws.com", "Retain")
    role = objects[("ClusterRole", "gpu-grid-portal-snapshots")]
    kubernetes_validate.validate(role, "1.33", strict=True)
    assert {
        "apiGroups": ["snapshot.storage.k8s.io"],
        "resources": ["volumesnapshots"],
        "verbs": ["get", "list", "create", "delete"],
    } in role["rules"]


@pytest.fixture
def on_fake(portal_on_fake: FakeApiServer, settings: Settings) -> FakeApiServer:
    settings.K8S_SNAPSHOT_CLASS = CLASS
    settings.K8S_DEFAULT_IMAGE = "pytorch/pytorch:2.5"
    settings.RECOVERY_REPLICA = ""  # volume snapshots only here
    portal_on_fake.add_claim(NS, "checkpoints", storage="50Gi")
    return portal_on_fake


def test_a_night_snapshots_each_teams_claim_waits_for_it_and_the_console_lists_it(
    on_fake: FakeApiServer, vision: Team, render: Team, web: Callable[[User | None], Client], olivia: User, alice: User
) -> None:
    report = services.nightly(wait_s=10)
    [row] = Snapshot.objects.all()  # render has no claim in the cluster: nothing to snapshot
    assert (row.team, row.kind, row.state, row.location) == (vision, SnapshotKind.VOLUME, SnapshotState.READY, NS)
    assert row.size_bytes == 50 * 2**30 and report.ready == [row.pk]
    stored = on_fake.get("snapshot.storage.k8s.io", "volumesnapshots", NS, row.name)
    assert stored is not None and stored["spec"]["volumeSnapshotClassName"] == CLASS
    assert stored["status"]["readyToUse"] is True

    page = web(olivia).get("/console/recovery/")
    assert page.status_code == 200 and row.name in page.content.decode() and "Restore" in page.content.decode()
    assert web(alice).get("/console/recovery/").status_code == 404  # a member of the team: operators only


def test_with_slurm_on_the_same_nodes_the_kubernetes_side_gets_its_volume_snapshots(
    on_fake: FakeApiServer, vision: Team, settings: Settings
) -> None:
    settings.CLUSTER_BACKEND = "slurm+kubernetes"
    assert isinstance(get_backend(), HybridBackend)
    report = services.nightly(wait_s=10)
    [row] = Snapshot.objects.all()
    assert (row.kind, row.state, row.location) == (SnapshotKind.VOLUME, SnapshotState.READY, NS) and report.ready == [row.pk]


def test_a_failed_snapshot_keeps_its_error_and_the_team_gets_a_new_one_the_next_night(
    on_fake: FakeApiServer, vision: Team
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    on_fake.snapshot_outcome = "error"
    tonight = timezone.now()
    services.nightly(now=tonight, wait_s=0)
    failed = Snapshot.objects.get()
    assert failed.state == SnapshotState.FAILED and "out of snapshot space" in failed.error

    on_fake.snapshot_outcome = "pending"  # the next night the controller is slow: the snapshot stays `taking`
    services.nightly(now=tonight + timedelta(days=1), wait_s=0)
    slow = Snapshot.objects.exclude(pk=failed.pk).get()
    assert slow.state == SnapshotState.TAKING
    on_fake.set_snapshot_ready(NS, slow.name)
    services.nightly(now=tonight + timedelta(days=2), wait_s=10)  # settled first, and a third night's taken
    slow.refresh_from_db()
    assert slow.state == SnapshotState.READY and Snapshot.objects.count() == 3


def test_a_restore_makes_a_claim_from_the_snapshot_and_the_job_dispatched_again_mounts_it(
    on_fake: FakeApiServer, submit: Callable[..., Job], alice: User, olivia: User, web: Callable[[User | None], Client]
) -> None:
    services.nightly(wait_s=10)
    snap = Snapshot.objects.get(state=SnapshotState.READY)
    job = submit(alice, checkpoint_dir="/ckpt", gpus_per_node=1)
    other = submit(alice, checkpoint_dir="/ckpt", gpus_per_node=1)

    assert web(alice).post(f"/console/recovery/{snap.pk}/restore/", {"job": job.pk}).status_code == 403
    answer = web(olivia).post(f"/console/recovery/{snap.pk}/restore/", {"job": job.pk}, follow=True)
    assert "checkpoints restored" in answer.content.decode()
    restore = Restore.objects.get()
    claim = on_fake.get("", "persistentvolumeclaims", NS, restore.claim)
    assert claim is not None
    assert claim["spec"]["dataSource"] == {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snap.name}
    assert claim["spec"]["resources"]["requests"]["storage"] == str(50 * 2**30)
    job.refresh_from_db()
    assert job.state == JobState.PENDING
    again = services.restore(olivia, snap.pk, job.pk)  # idempotent: the same restore, nothing new
    assert again.pk == restore.pk and len(on_fake.items("", "persistentvolumeclaims")) == 2

    backend = KubernetesBackend()
    for queued in (job, other):
        assert job_services.transition(queued.pk, JobState.ADMITTED, placement={}, pool="")
    assert sorted(job_services.dispatch_many([job.pk, other.pk], backend)) == sorted([job.pk, other.pk])
    mounted = {
        int(j["metadata"]["labels"]["portal.gpugrid.io/job-id"]): j["spec"]["tasks"][0]["template"]["spec"]["volumes"][0]
        for j in on_fake.items("batch.volcano.sh", "jobs")
    }
    assert mounted[job.pk] == {"name": "checkpoint", "persistentVolumeClaim": {"claimName": restore.claim}}
    assert mounted[other.pk] == {"name": "checkpoint", "persistentVolumeClaim": {"claimName": "checkpoints"}}


def test_expired_snapshots_are_deleted_from_the_cluster(on_fake: FakeApiServer, vision: Team, settings: Settings) -> None:
    from datetime import timedelta

    from django.utils import timezone

    settings.RECOVERY_RETENTION_DAYS = 3
    start = timezone.now()
    services.nightly(now=start, wait_s=10)
    first = Snapshot.objects.get()
    services.nightly(now=start + timedelta(days=4), wait_s=10)
    first.refresh_from_db()
    assert first.state == SnapshotState.DELETED and first.deleted_at is not None
    assert on_fake.get("snapshot.storage.k8s.io", "volumesnapshots", NS, first.name) is None
    assert Snapshot.objects.filter(state=SnapshotState.READY).count() == 1


def test_a_cluster_that_cannot_be_reached_fails_each_teams_snapshot_with_the_reason(
    on_fake: FakeApiServer, vision: Team, settings: Settings
) -> None:
    settings.K8S_KUBECONFIG = "/nonexistent/kubeconfig"
    services.nightly(wait_s=0)
    row = Snapshot.objects.get(team=vision)
    assert row.state == SnapshotState.FAILED and "cannot reach Kubernetes" in row.error and "kubeconfig" in row.error
