"""A sweep as a Katib `Experiment` (kubeflow.org/v1beta1), for running it on Kubernetes with Katib.

No Katib CRD is in /work/shared/schemas/crds/, so the manifest is checked against `EXPERIMENT_SCHEMA`:
the upstream fields it uses, as Katib's experiment guide and its examples (examples/v1beta1/hp-tuning)
spell them (feasibleSpace bounds are strings; parameterType double, int or categorical). Pure.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema

from sweeps import space as sp
from sweeps.states import EarlyStopping

ALGORITHMS = {"grid": "grid", "random": "random", "tpe": "tpe"}
# Katib's early stopping offers the median rule only; ASHA has no Katib early-stopping equivalent.
EARLY_STOPPING: dict[str, str] = {EarlyStopping.MEDIAN.value: "medianstop"}
PARAMETER_TYPES = {"float": "double", "int": "int", "categorical": "categorical"}
PRIMARY_CONTAINER = "training"

_NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
EXPERIMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kubeflow.org/v1beta1"},
        "kind": {"const": "Experiment"},
        "metadata": {"type": "object", "required": ["name"], "properties": {"name": _NAME, "namespace": _NAME}},
        "spec": {
            "type": "object",
            "required": ["objective", "algorithm", "parameters", "trialTemplate"],
            "additionalProperties": False,
            "properties": {
                "objective": {
                    "type": "object",
                    "required": ["type", "objectiveMetricName"],
                    "properties": {"type": {"enum": ["minimize", "maximize"]}, "objectiveMetricName": {"type": "string"}},
                },
                "algorithm": {
                    "type": "object",
                    "required": ["algorithmName"],
                    "properties": {"algorithmName": {"type": "string"}},
                },
                "earlyStopping": {"type": "object", "required": ["algorithmName"]},
                "parallelTrialCount": {"type": "integer", "minimum": 1},
                "maxTrialCount": {"type": "integer", "minimum": 1},
                "maxFailedTrialCount": {"type": "integer", "minimum": 0},
                "parameters": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "parameterType", "feasibleSpace"],
                        "properties": {
                            "name": {"type": "string"},
                            "parameterType": {"enum": ["double", "int", "discrete", "categorical"]},
                            "feasibleSpace": {
                                "type": "object",
                                "properties": {
                                    "min": {"type": "string"},
                                    "max": {"type": "string"},
                                    "step": {"type": "string"},
                                    "list": {"type": "array", "items": {"type": "string"}},
                                    "distribution": {"enum": ["uniform", "logUniform", "normal", "logNormal"]},
                                },
                            },
                        },
                    },
                },
                "trialTemplate": {
                    "type": "object",
                    "required": ["primaryContainerName", "trialParameters", "trialSpec"],
                    "properties": {
                        "primaryContainerName": {"type": "string"},
                        "trialParameters": {
                            "type": "array",
                            "items": {"type": "object", "required": ["name", "reference"]},
                        },
                        "trialSpec": {"type": "object", "required": ["apiVersion", "kind", "spec"]},
                    },
                },
            },
        },
    },
}


def _k8s_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "sweep"


def _parameter(param: sp.Param) -> dict[str, Any]:
    if param.type == "categorical":
        space: dict[str, Any] = {"list": [str(c) for c in param.choices]}
    elif param.type == "int":
        space = {"min": str(int(param.low)), "max": str(int(param.high)), "step": str(param.step)}
    else:
        space = {"min": repr(param.low), "max": repr(param.high)}
    if param.log and param.type != "categorical":
        space["distribution"] = "logUniform"
    return {"name": param.name, "parameterType": PARAMETER_TYPES[param.type], "feasibleSpace": space}


def experiment(
    *, name: str, namespace: str, space: tuple[sp.Param, ...], sampler: str, metric: str, direction: str,
    max_trials: int, max_parallel: int, early_stopping: str, retries: int, image: str, command: list[str], gpus: int,
) -> dict[str, Any]:  # fmt: skip
    """The Experiment manifest; `{param}` in the command becomes Katib's `${trialParameters.param}`."""
    names = {p.name for p in space}
    args = [
        re.sub(
            r"\{([a-z_][a-z0-9_]*)\}", lambda m: f"${{trialParameters.{m.group(1)}}}" if m.group(1) in names else m.group(0), a
        )
        for a in command
    ]
    container = {"name": PRIMARY_CONTAINER, "image": image, "command": args, "resources": {"limits": {"nvidia.com/gpu": gpus}}}
    spec: dict[str, Any] = {
        "objective": {"type": direction, "objectiveMetricName": metric},
        "algorithm": {"algorithmName": ALGORITHMS[sampler]},
        "parallelTrialCount": max_parallel,
        "maxTrialCount": max_trials,
        "maxFailedTrialCount": max_trials if retries else max(1, max_trials // 2),
        "parameters": [_parameter(p) for p in space],
        "trialTemplate": {
            "primaryContainerName": PRIMARY_CONTAINER,
            "trialParameters": [{"name": p.name, "description": f"{p.type} parameter", "reference": p.name} for p in space],
            "trialSpec": {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "spec": {"template": {"spec": {"containers": [container], "restartPolicy": "Never"}}},
            },
        },
    }
    if early_stopping in EARLY_STOPPING:
        spec["earlyStopping"] = {"algorithmName": EARLY_STOPPING[early_stopping]}
    manifest = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": _k8s_name(name), "namespace": _k8s_name(namespace)},
        "spec": spec,
    }
    validate(manifest)
    return manifest


def validate(manifest: dict[str, Any]) -> None:
    """jsonschema.ValidationError when the manifest breaks EXPERIMENT_SCHEMA."""
    jsonschema.validate(manifest, EXPERIMENT_SCHEMA)
