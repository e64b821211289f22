"""Small JSON schemas of the volume snapshot API, for the fake API server and the builders' tests.

schemas/crds/ has no snapshot CRDs. These schemas are NOT the upstream CRDs: they hold only the fields
the portal writes or reads, with names and types read from the upstream v1 API types
(kubernetes-csi/external-snapshotter client/apis/volumesnapshot/v1/types.go: VolumeSnapshotSpec,
VolumeSnapshotSource, VolumeSnapshotStatus, VolumeSnapshotError, VolumeSnapshotClass) and from core/v1
PersistentVolumeClaimSpec.dataSource (TypedLocalObjectReference). Fields not listed are unknown: the
fake refuses them under fieldValidation=Strict and drops them otherwise, as the API server does.
"""

from __future__ import annotations

from typing import Any

from tests.k8s.crd_schemas import CrdVersion

Schema = dict[str, Any]
STRING: Schema = {"type": "string"}
NAME: Schema = {"type": "string", "minLength": 1, "maxLength": 253}
QUANTITY: Schema = {
    "anyOf": [{"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"}, {"type": "integer"}]
}
GROUP = "snapshot.storage.k8s.io"

VOLUME_SNAPSHOT: Schema = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "apiVersion": {"enum": [f"{GROUP}/v1"]},
        "kind": {"enum": ["VolumeSnapshot"]},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["source"],
            "properties": {
                # Exactly one source: a claim to snapshot, or existing content to import.
                "source": {
                    "type": "object",
                    "properties": {"persistentVolumeClaimName": NAME, "volumeSnapshotContentName": NAME},
                    "oneOf": [{"required": ["persistentVolumeClaimName"]}, {"required": ["volumeSnapshotContentName"]}],
                },
                "volumeSnapshotClassName": NAME,
            },
        },
        "status": {
            "type": "object",
            "properties": {
                "boundVolumeSnapshotContentName": STRING,
                "creationTime": STRING,
                "readyToUse": {"type": "boolean"},
                "restoreSize": QUANTITY,
                "error": {"type": "object", "properties": {"message": STRING, "time": STRING}},
                "volumeGroupSnapshotName": STRING,
            },
        },
    },
}

VOLUME_SNAPSHOT_CLASS: Schema = {
    "type": "object",
    "required": ["driver", "deletionPolicy"],
    "properties": {
        "apiVersion": {"enum": [f"{GROUP}/v1"]},
        "kind": {"enum": ["VolumeSnapshotClass"]},
        "metadata": {"type": "object"},
        "driver": NAME,
        "deletionPolicy": {"enum": ["Delete", "Retain"]},
        "parameters": {"type": "object", "additionalProperties": STRING},
    },
}

# core/v1 PersistentVolumeClaimSpec.dataSource: a TypedLocalObjectReference (apiGroup is required for
# anything outside the core group, as a VolumeSnapshot is).
PVC_DATA_SOURCE: Schema = {
    "type": "object",
    "required": ["apiGroup", "kind", "name"],
    "properties": {"apiGroup": {"enum": [GROUP]}, "kind": {"enum": ["VolumeSnapshot"]}, "name": NAME},
    "additionalProperties": False,
}

SNAPSHOT_CRDS = [
    CrdVersion(GROUP, "v1", "volumesnapshots", "VolumeSnapshot", True, VOLUME_SNAPSHOT, True),
    CrdVersion(GROUP, "v1", "volumesnapshotclasses", "VolumeSnapshotClass", False, VOLUME_SNAPSHOT_CLASS, True),
]
