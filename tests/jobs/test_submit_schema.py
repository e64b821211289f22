"""The OpenAPI schema of a submission and jobs.spec.validate accept the same fields with the same bounds.

Both come from jobs.spec.SUBMIT_FIELDS; these tests fail if either is changed on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from cluster.simulator.backend import SimulatorBackend
from jobs.spec import KNOWN_FIELDS, SUBMIT_FIELDS, SpecError
from portal.models import User


@pytest.fixture(scope="module")
def submit_schema() -> dict[str, Any]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/v1/jobs/"]["post"]
    components = schema["components"]["schemas"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    body = dict(components[ref])
    for name, prop in body["properties"].items():  # an enum is a component of its own: inline it
        refs = [prop["$ref"]] if "$ref" in prop else [p["$ref"] for p in prop.get("allOf", []) if "$ref" in p]
        for found in refs:
            body["properties"][name] = {**prop, **components[found.rsplit("/", 1)[-1]]}
    return body


def test_the_schema_documents_exactly_the_fields_validation_accepts(submit_schema: dict[str, Any]) -> None:
    assert set(submit_schema["properties"]) == set(KNOWN_FIELDS)
    assert set(submit_schema.get("required", [])) == {n for n, f in SUBMIT_FIELDS.items() if f.required}


def test_the_schema_bounds_and_choices_are_the_declared_ones(submit_schema: dict[str, Any]) -> None:
    for name, declared in SUBMIT_FIELDS.items():
        prop = submit_schema["properties"][name]
        if declared.minimum is not None:
            assert prop["minimum"] == declared.minimum, name
        if declared.maximum is not None:
            assert prop["maximum"] == declared.maximum, name
        if declared.choices:
            assert set(prop["enum"]) == set(declared.choices), name
        expected_type = {"integer": "integer", "string-list": "array", "string-map": "object", "map": "object"}.get(declared.kind)
        if expected_type and not declared.choices:
            assert prop["type"] == expected_type, name


def test_a_field_the_schema_does_not_name_is_refused_by_validation(
    api: Callable[[User | None], APIClient], alice: User, grid: SimulatorBackend
) -> None:
    body = {"name": "x", "command": ["train"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": 600, "gpu_count": 2}
    response = api(alice).post("/api/v1/jobs/", body, format="json")
    assert response.status_code == 400 and response.json()["gpu_count"] == ["is not a job field"]


@pytest.mark.parametrize("name", [n for n, f in SUBMIT_FIELDS.items() if f.minimum is not None or f.maximum is not None])
def test_validation_enforces_each_declared_bound(name: str, alice: User, grid: SimulatorBackend) -> None:
    from jobs import services

    declared = SUBMIT_FIELDS[name]
    base = {"name": "x", "command": ["train"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": 600}
    outside = [v for v in (declared.minimum - 1 if declared.minimum is not None else None,
                           declared.maximum + 1 if declared.maximum is not None else None) if v is not None]  # fmt: skip
    for value in outside:
        raw = {**base, name: value}
        if name == "walltime_s":
            raw.pop("walltime")
        if name in ("gpus", "nodes"):
            raw.pop("gpus_per_node")
        with pytest.raises(SpecError) as refused:
            services.submit(alice, raw)
        assert name in refused.value.errors, (name, value, refused.value.errors)


def _form(template_slug: str, data: dict[str, Any] | None = None) -> Any:
    from jobs.forms import JobForm
    from jobs.models import JobTemplate

    template = JobTemplate.objects.get(slug=template_slug)
    return JobForm(data, template=template, teams=[("vision", "Vision")], gpu_models=["a100", "h100"], priorities=["standard"])


@pytest.mark.django_db
def test_the_web_form_shows_declared_fields_with_the_declared_bounds() -> None:
    from django import forms

    from jobs.spec import FORM_FIELDS

    form = _form("pytorch-ddp")
    declared_on_form = [n for n in form.fields if not n.startswith("param_")]
    assert declared_on_form == list(FORM_FIELDS) and set(FORM_FIELDS) <= KNOWN_FIELDS
    for name in FORM_FIELDS:
        declared, field = SUBMIT_FIELDS[name], form.fields[name]
        assert field.required == declared.required, name
        if declared.kind == "integer":
            assert isinstance(field, forms.IntegerField), name
            assert (field.min_value, field.max_value) == (declared.minimum, declared.maximum), name


@pytest.mark.django_db
def test_what_the_web_form_sends_is_what_validation_accepts(alice: User, grid: SimulatorBackend) -> None:
    from jobs import services

    data = {
        "team": "vision", "name": "form-run", "gpu_model": "a100", "gpus_per_node": "2", "nodes": "1",
        "priority": "standard", "walltime": "01:00:00", "command": "python\ntrain.py\n", "checkpoint_dir": "/ckpt/run",
        "checkpoint_interval": "600", "env": "SEED=7\nDEBUG", "array": "",
    }  # fmt: skip
    form = _form("pytorch-ddp", data)
    assert form.is_valid(), form.errors
    raw = form.as_request()
    assert set(raw) <= KNOWN_FIELDS and "array" not in raw
    assert raw["command"] == ["python", "train.py"] and raw["env"] == {"SEED": "7", "DEBUG": ""}
    (job,) = services.submit(alice, raw)
    assert (job.gpus_per_node, job.checkpoint_interval_s, job.env["SEED"]) == (2, 600, "7")


@pytest.mark.django_db
def test_the_web_form_refuses_a_declared_bound_before_submitting() -> None:
    form = _form("pytorch-ddp", {"team": "vision", "name": "x", "gpu_model": "a100", "gpus_per_node": "0", "nodes": "1",
                                 "priority": "standard", "walltime": "01:00:00", "checkpoint_interval": "5"})  # fmt: skip
    assert not form.is_valid()
    assert set(form.errors) == {"gpus_per_node", "checkpoint_interval"}
