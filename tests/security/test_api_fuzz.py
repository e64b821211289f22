"""Property-based fuzzing of the REST API from its own OpenAPI schema (schemathesis).

The schema is the one /api/schema/ serves, generated in-process; every operation is called
through the WSGI application as alice (a researcher of vision) with her token, on a grid with a
job of hers. Two checks: no 5xx, and every response matches the schema. The run is bounded by
MAX_EXAMPLES per operation; docs/security.md records how many cases that is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, given, settings
from rest_framework.test import APIClient
from schemathesis.checks import not_a_server_error, response_schema_conformance

import portal.security  # noqa: F401 - registers the token scheme with the schema generator
from grid.wsgi import application
from jobs.models import Job
from portal.models import ApiToken, User

MAX_EXAMPLES = 12
FUZZ = settings(
    max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)  # fmt: skip


@pytest.fixture
def api_schema(db: None, alice: User, submit: Callable[..., Job]) -> Any:
    submit(alice, name="fuzz-target")
    document = json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True), default=str))
    return schemathesis.openapi.from_dict(document)


@pytest.fixture(autouse=True)
def keep_the_test_transaction() -> Any:
    """Django closes the connection after each WSGI request; its test client stops that, and so must this file."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def token(alice: User) -> str:
    return ApiToken.issue(alice, "fuzz")[1]


def summary(exc: BaseException) -> str:
    leaves = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
    return "; ".join(" ".join(str(leaf).split())[:300] for leaf in leaves)


def fuzz(api_schema: Any, token: str, check: Any) -> tuple[int, list[str]]:
    """Run every operation's generated cases through `check`; returns (cases tried, failures)."""
    tried, failures = 0, []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @FUZZ
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            nonlocal tried
            tried += 1
            response = case.call(headers={"Authorization": f"Token {token}"}, app=application)
            case.validate_response(response, checks=[check])

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect every operation's failure, report them together
            failures.append(f"{operation.label}: {summary(exc)}")
    return tried, failures


def test_no_operation_answers_with_a_server_error(api_schema: Any, token: str) -> None:
    tried, failures = fuzz(api_schema, token, not_a_server_error)
    print(f"\nschemathesis not_a_server_error: {tried} cases, failing operations: {failures}")
    assert tried >= 400
    assert failures == []


def test_every_response_matches_the_schema(api_schema: Any, token: str) -> None:
    tried, failures = fuzz(api_schema, token, response_schema_conformance)
    print(f"\nschemathesis response_schema_conformance: {tried} cases, failing operations: {failures}")
    assert failures == []


def test_a_malformed_array_id_filter_is_a_400(api: Callable[[User | None], APIClient], alice: User) -> None:
    assert api(alice).get("/api/v1/jobs/?array_id=x").status_code == 400


def test_a_job_without_a_template_matches_the_schema(
    api_schema: Any, api: Callable[[User | None], APIClient], alice: User
) -> None:
    template = api_schema.raw_schema["components"]["schemas"]["Job"]["properties"]["template"]
    assert api(alice).get("/api/v1/jobs/").json()["results"][0]["template"] is None
    assert template.get("nullable") is True
