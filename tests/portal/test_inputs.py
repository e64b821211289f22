"""The strict input layer: pure checks, then one request per class of bad input through the middleware."""

from __future__ import annotations

import base64
import json
from datetime import date
from typing import Any

import pytest
from django.test import Client

from portal import inputs
from portal.models import User


def nested(depth: int) -> str:
    return '{"name": "x", "params": ' + '{"a": ' * depth + "1" + "}" * depth + "}"


def test_deep_json_names_the_top_level_key_and_the_limit() -> None:
    with pytest.raises(inputs.BadInput) as caught:
        inputs.parse_json(nested(5000))
    assert caught.value.field == "params" and str(inputs.MAX_JSON_DEPTH) in caught.value.message
    assert inputs.parse_json(nested(10))["name"] == "x"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"env": {"K": "a\\u0000b"}}', "env.K"),
        ('{"name": "\\ud800"}', "name"),
        ('{"array": {"end": 99999999999999999999}}', "array.end"),
        ('{"command": ["ok", "\\udc00"]}', "command[1]"),
        ("{not json", "body"),
    ],
)
def test_json_a_database_cannot_store_is_refused_naming_where(body: str, field: str) -> None:
    with pytest.raises(inputs.BadInput) as caught:
        inputs.parse_json(body)
    top = field.split(".")[0].split("[")[0]
    assert caught.value.field == top and (field == top or caught.value.message.startswith(field))


@pytest.mark.parametrize("text", ["0000-01", "9999-12", "2025-13", "٢٠٢٥-03", "2025-3", "²025-03", ""])
def test_a_month_outside_the_calendar_or_in_other_digits_is_refused(text: str) -> None:
    with pytest.raises(inputs.BadInput) as caught:
        inputs.month(text)
    assert caught.value.field == "month"


def test_a_month_in_range_is_its_first_day() -> None:
    assert inputs.month("2025-03") == date(2025, 3, 1)
    assert inputs.month(None, default=date(2024, 1, 1)) == date(2024, 1, 1)


@pytest.mark.parametrize("text", ["²", "٣", "1e3", "abc", "99999999999999999999", "-1", "101"])
def test_integer_refuses_anything_but_ascii_digits_within_bounds(text: str) -> None:
    with pytest.raises(inputs.BadInput) as caught:
        inputs.integer(text, "days", 0, 100)
    assert caught.value.field == "days" and "100" in caught.value.message


def cursor(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/jobs/?q=a%00b", "q"),
        ("/jobs/?team=%00", "team"),
        ("/api/v1/jobs/?q=%01", "q"),
        ("/api/v1/nodes/a%00b/", "path"),
        ("/console/nodes/%00/", "path"),
        ("/billing/?month=0000-01", "month"),
        ("/api/v1/billing/invoices/?month=9999-12", "month"),
        ("/api/v1/billing/summary/?month=٢٠٢٥-01", "month"),
    ],
)
def test_each_class_of_bad_query_or_path_is_a_400_naming_the_field(
    web: Any, api: Any, alice: User, olivia: User, fiona: User, url: str, field: str
) -> None:
    allowed = fiona if "billing" in url else olivia
    for user in (allowed, alice) if "?" in url and "billing" not in url else (allowed,):
        client = api(user) if url.startswith("/api/") else web(user)
        response = client.get(url)
        assert response.status_code == 400, (url, response.status_code)
        text = response.content.decode()
        assert field in text, text


@pytest.mark.parametrize("position", ["abc", "\x00", "1e400", "99999999999999999999"])
def test_a_forged_cursor_is_a_404_not_a_500(api: Any, alice: User, position: str) -> None:
    for url in ("/api/v1/jobs/", "/api/v1/billing/invoices/", "/api/v1/bursting/bursts/"):
        response = api(alice).get(url, {"cursor": cursor(f"p={position}")})
        assert response.status_code in (403, 404), (url, response.status_code)


@pytest.mark.parametrize(
    "body",
    [nested(5000), '{"name": "\\ud800"}', '{"\\ud800": 1}', '{"name": "x", "walltime": 99999999999999999999}'],
)
def test_a_json_body_no_field_could_store_is_a_400_on_every_write(api: Any, alice: User, grid: Any, body: str) -> None:
    for url in ("/api/v1/jobs/", "/api/v1/tokens/", "/api/v1/billing/invoices/generate/"):
        response = api(alice).post(url, body, content_type="application/json")
        assert response.status_code == 400, (url, response.status_code)
        assert json.loads(response.content), response.content


def test_a_nul_in_a_form_field_is_a_400_and_nothing_is_started(web: Any, olivia: User, grid: Any) -> None:
    from jobs.models import WhatIfRun

    response = web(olivia).post("/planning/", {"gpu_model": "a100\x00", "days": "1"})
    assert response.status_code == 400 and b"gpu_model" in response.content
    response = web(olivia).post("/planning/", {"gpu_model": "a100", "days": "²"})
    assert response.status_code == 200 and "not a whole number" in response.content.decode()
    assert not WhatIfRun.objects.exists()


def test_a_signed_out_client_gets_no_help_from_the_layer() -> None:
    assert Client().get("/jobs/?q=%00").status_code == 400  # refused before anything is looked up
