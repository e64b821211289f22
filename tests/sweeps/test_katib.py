"""A sweep exported as a Katib Experiment (kubeflow.org/v1beta1), checked against the schema of its upstream fields."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
import yaml

from portal.models import User
from sweeps import katib, services
from tests.sweeps.conftest import sweep_request


@pytest.mark.django_db
def test_the_export_is_a_valid_experiment(alice: User, web: Callable[[User | None], Any]) -> None:
    sweep = services.create_sweep(alice, sweep_request(early_stopping="median", direction="maximize", metric="accuracy"))
    response = web(alice).get(f"/sweeps/{sweep.pk}/katib.yaml")
    assert response.status_code == 200 and response["Content-Type"] == "application/yaml"
    manifest = yaml.safe_load(response.content)
    katib.validate(manifest)
    spec = manifest["spec"]
    assert manifest["metadata"] == {"name": "lr-search", "namespace": "vision"}
    assert spec["objective"] == {"type": "maximize", "objectiveMetricName": "accuracy"}
    assert spec["algorithm"] == {"algorithmName": "tpe"} and spec["earlyStopping"] == {"algorithmName": "medianstop"}
    assert spec["parameters"][0] == {
        "name": "lr",
        "parameterType": "double",
        "feasibleSpace": {"min": "0.0001", "max": "1.0", "distribution": "logUniform"},
    }
    assert spec["parameters"][1]["feasibleSpace"] == {"list": ["sgd", "adam"]}
    container = spec["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "train.py", "--lr", "${trialParameters.lr}", "--opt=${trialParameters.opt}"]


def test_the_schema_refuses_a_manifest_katib_would_refuse() -> None:
    bad: dict[str, Any] = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": "x"},
        "spec": {"objective": {"type": "lowest"}},
    }
    with pytest.raises(jsonschema.ValidationError):
        katib.validate(bad)
