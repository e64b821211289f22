"""Checkpoint volume snapshots on Kubernetes: pure builders, and `VolumeSnapshots`, the calls that use them.

Each team's checkpoint volume is one PersistentVolumeClaim in its namespace (K8S_CHECKPOINT_CLAIM,
mounted by every job of the team at its checkpoint_dir). A nightly `VolumeSnapshot`
(snapshot.storage.k8s.io/v1, the CSI external-snapshotter's API) copies it; a restore makes a new
claim in the same namespace whose `dataSource` is the snapshot, and the job's next pods mount that
claim instead of the team's (`manifests.CHECKPOINT_CLAIM_ENV`). The builders take plain data and
return plain dicts, so tests check them against the upstream v1 fields (tests/k8s/snapshot_schemas.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from cluster.backends.base import BackendRejected
from cluster.backends.kubernetes.errors import ConflictError, NotFoundError
from cluster.backends.kubernetes.manifests import (
    DOMAIN,
    JOB_ID_LABEL,
    MANAGED_BY,
    TEAM_LABEL,
    Manifest,
    ManifestConfig,
    namespace_for,
    object_name,
)

if TYPE_CHECKING:
    from cluster.backends.kubernetes.api import KubeApi

SNAPSHOT_GROUP = "snapshot.storage.k8s.io"
SNAPSHOT_API = (SNAPSHOT_GROUP, "v1", "volumesnapshots", "VolumeSnapshot")
SNAPSHOT_CLASS_API = (SNAPSHOT_GROUP, "v1", "volumesnapshotclasses", "VolumeSnapshotClass")
SNAPSHOT_LABEL = f"{DOMAIN}/snapshot"
DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUANTITY_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
SUFFIXES |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
POLL_S = 1.0


class SnapshotError(ValueError):
    """A snapshot or restored claim cannot be expressed as a valid object (a refusal, not an outage)."""


# --- pure builders ---------------------------------------------------------------------------------


def _name(text: str, what: str) -> str:
    if len(text) > 253 or not DNS_SUBDOMAIN_RE.fullmatch(text):
        raise SnapshotError(f"{what} {text[:80]!r} is not a valid object name (lowercase letters, digits, '-', '.')")
    return text


def snapshot_name(stamp: str) -> str:
    """The night's snapshot of a team's checkpoint claim, e.g. `checkpoints-20260102-0200` (one per namespace)."""
    return _name(f"checkpoints-{stamp}", "snapshot name")


def volume_snapshot(team: str, name: str, config: ManifestConfig, snapshot_class: str) -> Manifest:
    """A VolumeSnapshot of the team's checkpoint claim, in the team's namespace."""
    if not snapshot_class:
        raise SnapshotError("K8S_SNAPSHOT_CLASS is empty: set the VolumeSnapshotClass the snapshots use")
    group, version, _, kind = SNAPSHOT_API
    return {
        "apiVersion": f"{group}/{version}",
        "kind": kind,
        "metadata": {
            "name": _name(name, "snapshot name"),
            "namespace": namespace_for(team, config),
            "labels": {**MANAGED_BY, TEAM_LABEL: team},
        },
        "spec": {
            "volumeSnapshotClassName": _name(snapshot_class, "snapshot class"),
            "source": {"persistentVolumeClaimName": _name(config.checkpoint_claim, "checkpoint claim")},
        },
    }


def snapshot_class(name: str, driver: str) -> Manifest:
    """The VolumeSnapshotClass the export writes: `Retain`, so deleting a VolumeSnapshot keeps the data
    until the portal's retention (or an operator) deletes its content."""
    if not driver:
        raise SnapshotError("K8S_SNAPSHOT_DRIVER is empty: name the CSI driver of the checkpoint volumes")
    group, version, _, kind = SNAPSHOT_CLASS_API
    return {
        "apiVersion": f"{group}/{version}",
        "kind": kind,
        "metadata": {"name": _name(name, "snapshot class"), "labels": dict(MANAGED_BY)},
        "driver": driver,
        "deletionPolicy": "Retain",
    }


def restored_claim_name(portal_job_id: int, snapshot: str) -> str:
    """The claim a restore makes for one job from one snapshot: the same pair gives the same name (idempotent)."""
    return _name(f"{object_name(portal_job_id)}-{snapshot}"[:63].rstrip("-."), "restored claim")


def restored_claim(
    team: str, portal_job_id: int, snapshot: str, size_bytes: int, source: Manifest, config: ManifestConfig
) -> Manifest:
    """A PersistentVolumeClaim filled from the snapshot (`dataSource`), shaped like the team's claim `source`
    (its access modes and storage class), at least as big as the snapshot's restore size."""
    if size_bytes <= 0:
        raise SnapshotError(f"size_bytes must be positive, not {size_bytes}")
    spec = source.get("spec") or {}
    body: Manifest = {
        "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
        "resources": {"requests": {"storage": str(max(size_bytes, requested_bytes(source)))}},
        "dataSource": {"apiGroup": SNAPSHOT_GROUP, "kind": SNAPSHOT_API[3], "name": _name(snapshot, "snapshot name")},
    }
    if spec.get("storageClassName"):
        body["storageClassName"] = spec["storageClassName"]
    if spec.get("volumeMode"):
        body["volumeMode"] = spec["volumeMode"]
    labels = {**MANAGED_BY, TEAM_LABEL: team, JOB_ID_LABEL: str(portal_job_id), SNAPSHOT_LABEL: snapshot}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": restored_claim_name(portal_job_id, snapshot),
            "namespace": namespace_for(team, config),
            "labels": labels,
        },
        "spec": body,
    }


def requested_bytes(claim: Manifest) -> int:
    """The storage a claim asks for, in bytes (0 when it names none)."""
    raw = (((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
    return parse_quantity(str(raw)) if raw else 0


def parse_quantity(text: str) -> int:
    """A Kubernetes quantity (`10Gi`, `500M`, `1073741824`) in bytes, rounded up."""
    match = QUANTITY_RE.fullmatch(text.strip())
    if match is None:
        raise SnapshotError(f"{text[:40]!r} is not a storage quantity such as 10Gi")
    try:
        value = Decimal(match[1]) * SUFFIXES[match[2] or ""]
    except InvalidOperation:
        raise SnapshotError(f"{text[:40]!r} is not a storage quantity such as 10Gi") from None
    return int(value.to_integral_value(rounding="ROUND_CEILING"))


@dataclass(frozen=True)
class SnapshotStatus:
    """What the snapshot controller says of one VolumeSnapshot."""

    name: str
    ready: bool
    error: str = ""
    size_bytes: int | None = None
    content: str = ""


def snapshot_status(obj: Manifest) -> SnapshotStatus:
    """A VolumeSnapshot's `status` in plain terms: readyToUse, error.message, restoreSize."""
    status = obj.get("status") or {}
    error = (status.get("error") or {}).get("message") or ""
    size = status.get("restoreSize")
    return SnapshotStatus(
        name=str((obj.get("metadata") or {}).get("name", "")),
        ready=status.get("readyToUse") is True,
        error=str(error)[:1000],
        size_bytes=parse_quantity(str(size)) if size not in (None, "") else None,
        content=str(status.get("boundVolumeSnapshotContentName") or ""),
    )


def snapshot_rules() -> list[Manifest]:
    """What snapshots and restores call: read the team claims, create restored ones, create/read/delete snapshots."""
    return [
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list", "create", "delete"]},
        {"apiGroups": [SNAPSHOT_GROUP], "resources": [SNAPSHOT_API[2]], "verbs": ["get", "list", "create", "delete"]},
    ]


def snapshot_rbac(namespace: str, service_account: str) -> list[Manifest]:
    """A ClusterRole of its own for the snapshot rules, bound to the portal's service account."""
    name = "gpu-grid-portal-snapshots"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": dict(MANAGED_BY)},
            "rules": snapshot_rules(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": dict(MANAGED_BY)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
        },
    ]


# --- the calls -------------------------------------------------------------------------------------


class VolumeSnapshots:
    """Create, read, wait for and delete checkpoint snapshots, and make restored claims; errors are BackendErrors."""

    def __init__(self, api: KubeApi, config: ManifestConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        self.api = api
        self.config = config
        self.sleep = sleep

    def _custom(self, verb: str, action: str, *args: Any, **kwargs: Any) -> Manifest:
        group, version, plural, _ = SNAPSHOT_API
        fn = getattr(self.api.custom, f"{verb}_namespaced_custom_object")
        found: Manifest = self.api.call(action, fn, group, version, *args[:1], plural, *args[1:], **kwargs)
        return found

    def namespace(self, team: str) -> str:
        return namespace_for(team, self.config)

    def claim_exists(self, team: str) -> bool:
        """Whether the team's namespace has its checkpoint claim (a team that never ran here has none)."""
        namespace = self.namespace(team)
        try:
            self.api.call(
                f"get PersistentVolumeClaim {namespace}/{self.config.checkpoint_claim}",
                self.api.core.read_namespaced_persistent_volume_claim, self.config.checkpoint_claim, namespace,
            )  # fmt: skip
        except NotFoundError:
            return False
        return True

    def create(self, team: str, name: str, snapshot_class: str) -> SnapshotStatus:
        """Take the snapshot; one already there under this name (a repeated run) is kept and read."""
        try:
            body = volume_snapshot(team, name, self.config, snapshot_class)
        except (SnapshotError, ValueError) as exc:
            raise BackendRejected(f"snapshot of team {team}'s checkpoints: {exc}") from exc
        namespace = body["metadata"]["namespace"]
        try:
            created = self._custom(
                "create", f"create VolumeSnapshot {namespace}/{name}", namespace, body, field_validation="Strict"
            )
        except ConflictError:
            return self.get(team, name) or SnapshotStatus(name, ready=False)
        return snapshot_status(created)

    def get(self, team: str, name: str) -> SnapshotStatus | None:
        namespace = namespace_for(team, self.config)
        try:
            return snapshot_status(self._custom("get", f"get VolumeSnapshot {namespace}/{name}", namespace, name))
        except NotFoundError:
            return None

    def wait(self, wanted: list[tuple[str, str]], timeout_s: float) -> dict[tuple[str, str], SnapshotStatus | None]:
        """Poll each (team, name) until it is ready or failed, or `timeout_s` passes; the last status of each."""
        found: dict[tuple[str, str], SnapshotStatus | None] = {}
        deadline = time.monotonic() + timeout_s
        waiting = list(wanted)
        while True:
            for key in waiting:
                found[key] = self.get(*key)
            waiting = [k for k in waiting if (s := found[k]) is not None and not s.ready and not s.error]
            if not waiting or time.monotonic() >= deadline:
                return found
            self.sleep(POLL_S)

    def delete(self, team: str, name: str) -> None:
        namespace = namespace_for(team, self.config)
        try:
            self._custom("delete", f"delete VolumeSnapshot {namespace}/{name}", namespace, name)
        except NotFoundError:
            return  # gone already

    def restore_claim(self, team: str, portal_job_id: int, snapshot: str, size_bytes: int) -> str:
        """Make the job's claim from the snapshot; returns its name. One already there from the same snapshot is kept."""
        namespace = namespace_for(team, self.config)
        source = self.api.call(
            f"get PersistentVolumeClaim {namespace}/{self.config.checkpoint_claim}",
            self.api.core.read_namespaced_persistent_volume_claim, self.config.checkpoint_claim, namespace,
        )  # fmt: skip
        try:
            body = restored_claim(team, portal_job_id, snapshot, size_bytes, source, self.config)
        except (SnapshotError, ValueError) as exc:
            raise BackendRejected(f"restored claim of job #{portal_job_id}: {exc}") from exc
        name = body["metadata"]["name"]
        action = f"create PersistentVolumeClaim {namespace}/{name}"
        try:
            self.api.call(
                action, self.api.core.create_namespaced_persistent_volume_claim, namespace, body, field_validation="Strict"
            )
        except ConflictError:
            existing = self.api.call(
                f"get PersistentVolumeClaim {namespace}/{name}", self.api.core.read_namespaced_persistent_volume_claim, name, namespace
            )  # fmt: skip
            if ((existing.get("spec") or {}).get("dataSource") or {}).get("name") != snapshot:
                raise BackendRejected(
                    f"PersistentVolumeClaim {namespace}/{name} exists but is not restored from {snapshot}"
                ) from None
        return str(name)

    def delete_claim(self, team: str, name: str) -> None:
        namespace = namespace_for(team, self.config)
        try:
            self.api.call(
                f"delete PersistentVolumeClaim {namespace}/{name}",
                self.api.core.delete_namespaced_persistent_volume_claim, name, namespace,
            )  # fmt: skip
        except NotFoundError:
            return
