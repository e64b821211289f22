"""Small JSON schemas for the custom resources in deploy/ whose CRDs the project does not vendor.

schemas/crds/ holds Volcano, Kubeflow and Cluster API's MachineDeployment; the deployment also
writes a Prometheus Operator ServiceMonitor, Cluster API Provider AWS and GCP machine templates
and Cluster API's KubeadmConfigTemplate. These schemas are NOT the upstream CRDs: they list only
the fields deploy/ uses, with the names and types read from the upstream API types
(prometheus-operator monitoring.coreos.com/v1 ServiceMonitorSpec, Endpoint and RelabelConfig;
cluster-api-provider-aws api/v1beta2/awsmachine_types.go AWSMachineSpec;
cluster-api-provider-gcp GCPMachineSpec; cluster-api api/bootstrap/kubeadm/v1beta2
kubeadm_types.go, where kubeletExtraArgs became a list of {name, value}). Unknown fields are
refused, so a misspelt field fails here as it would be dropped or refused by the API server.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def _obj(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
STRING_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
META: Schema = {"type": "object"}


def _resource(api_version: str, kind: str, spec: Schema) -> Schema:
    return _obj(
        {"apiVersion": {"enum": [api_version]}, "kind": {"enum": [kind]}, "metadata": META, "spec": spec},
        ("apiVersion", "kind", "metadata", "spec"),
    )


_SECRET_KEY_SELECTOR = _obj({"name": STRING, "key": STRING, "optional": {"type": "boolean"}}, ("key",))
_LABEL_SELECTOR = _obj(
    {"matchLabels": STRING_MAP, "matchExpressions": {"type": "array", "items": {"type": "object"}}},
)

_LABEL_NAME: Schema = {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}
_RELABEL_ACTIONS = ("replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep", "lowercase", "uppercase",
                    "keepequal", "dropequal")  # fmt: skip
_RELABEL_ACTIONS_CAMEL = ("Replace", "Keep", "Drop", "HashMod", "LabelMap", "LabelDrop", "LabelKeep", "Lowercase",
                          "Uppercase", "KeepEqual", "DropEqual")  # fmt: skip
_RELABEL_CONFIG = _obj(
    {
        "sourceLabels": {"type": "array", "items": _LABEL_NAME},
        "separator": STRING,
        "targetLabel": STRING,
        "regex": STRING,
        "modulus": INTEGER,
        "replacement": STRING,
        "action": {"enum": [*_RELABEL_ACTIONS, *_RELABEL_ACTIONS_CAMEL]},
    }
)

SERVICE_MONITOR = _resource(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    _obj(
        {
            "jobLabel": STRING,
            "selector": _LABEL_SELECTOR,
            "namespaceSelector": _obj({"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": STRING}}),
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": _obj(
                    {
                        "port": STRING,
                        "path": STRING,
                        "scheme": {"enum": ["http", "https"]},
                        "interval": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
                        "scrapeTimeout": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
                        "authorization": _obj({"type": STRING, "credentials": _SECRET_KEY_SELECTOR}),
                        "honorLabels": {"type": "boolean"},
                        "relabelings": {"type": "array", "items": _RELABEL_CONFIG},
                    }
                ),
            },
        },
        ("selector", "endpoints"),
    ),
)

AWS_MACHINE_TEMPLATE = _resource(
    "infrastructure.cluster.x-k8s.io/v1beta2",
    "AWSMachineTemplate",
    _obj(
        {
            "template": _obj(
                {
                    "spec": _obj(
                        {
                            "instanceType": {"type": "string", "minLength": 2},
                            "ami": _obj({"id": STRING}),
                            "imageLookupBaseOS": STRING,
                            "iamInstanceProfile": STRING,
                            "sshKeyName": STRING,
                            "rootVolume": _obj({"size": {"type": "integer", "minimum": 8}, "type": STRING}, ("size",)),
                            "spotMarketOptions": _obj({"maxPrice": STRING}),
                            "additionalTags": STRING_MAP,
                        },
                        ("instanceType",),
                    )
                },
                ("spec",),
            )
        },
        ("template",),
    ),
)

GCP_MACHINE_TEMPLATE = _resource(
    "infrastructure.cluster.x-k8s.io/v1beta1",
    "GCPMachineTemplate",
    _obj(
        {
            "template": _obj(
                {
                    "spec": _obj(
                        {
                            "instanceType": STRING,
                            "image": STRING,
                            "imageFamily": STRING,
                            "rootDeviceSize": INTEGER,
                            "rootDeviceType": {"enum": ["pd-standard", "pd-ssd", "pd-balanced", "hyperdisk-balanced"]},
                            "onHostMaintenance": {"enum": ["Migrate", "Terminate"]},
                            "provisioningModel": {"enum": ["Standard", "Spot"]},
                            "additionalLabels": {
                                "type": "object",
                                # GCE labels: lower-case letters, digits, '_' and '-'
                                "additionalProperties": {"type": "string", "pattern": "^[a-z0-9_-]{0,63}$"},
                                "propertyNames": {"pattern": "^[a-z][a-z0-9_-]{0,62}$"},
                            },
                        },
                        ("instanceType",),
                    )
                },
                ("spec",),
            )
        },
        ("template",),
    ),
)

_TAINT = _obj(
    {"key": STRING, "value": STRING, "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]}},
    ("key", "effect"),
)

KUBEADM_CONFIG_TEMPLATE = _resource(
    "bootstrap.cluster.x-k8s.io/v1beta2",
    "KubeadmConfigTemplate",
    _obj(
        {
            "template": _obj(
                {
                    "spec": _obj(
                        {
                            "joinConfiguration": _obj(
                                {
                                    "nodeRegistration": _obj(
                                        {
                                            "kubeletExtraArgs": {
                                                "type": "array",
                                                "items": _obj({"name": STRING, "value": STRING}, ("name", "value")),
                                            },
                                            "taints": {"type": "array", "items": _TAINT},
                                        }
                                    )
                                }
                            )
                        }
                    )
                },
                ("spec",),
            )
        },
        ("template",),
    ),
)

BY_KIND: dict[tuple[str, str], Schema] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("infrastructure.cluster.x-k8s.io/v1beta2", "AWSMachineTemplate"): AWS_MACHINE_TEMPLATE,
    ("infrastructure.cluster.x-k8s.io/v1beta1", "GCPMachineTemplate"): GCP_MACHINE_TEMPLATE,
    ("bootstrap.cluster.x-k8s.io/v1beta2", "KubeadmConfigTemplate"): KUBEADM_CONFIG_TEMPLATE,
}
