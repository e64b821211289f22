"""Property test over every page: any text in any query parameter or form field never gets a 5xx.

The pages come from the route samples (tests/security/samples.py); the fields from what each page
itself offers: the names of its forms' inputs, selects and textareas, and the query parameters of
its own links, plus the parameters the views read (`PARAMS`). Hypothesis draws the text, including
NUL and other control characters, non-ASCII digits, huge numbers and very long strings; operator and
finance users send it, so every page answers rather than refusing outright.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.samples import SAMPLES

PARAMS = ("q", "team", "month", "page", "state", "mine", "array_id", "action", "kind", "actor", "since", "until", "offset")
SKIP = ("/accounts/logout/", "/billing/invoices/{invoice}/finalise/")  # ends the session / finalises the world


class Fields(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, str, set[str]]] = []
        self.links: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append(((a.get("method") or "get").lower(), a.get("action") or "", set()))
        elif tag in ("input", "select", "textarea") and self.forms and a.get("name"):
            self.forms[-1][2].add(str(a["name"]))
        elif tag == "a" and a.get("href") and "?" in str(a["href"]):
            self.links.update(k for k, _ in parse_qsl(urlsplit(str(a["href"])).query))


def targets(client: Client, world: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(method, url, field) for every page: its forms' fields and its query parameters."""
    out: set[tuple[str, str, str]] = set()
    for sample in SAMPLES.values():
        if sample.startswith("/api/") or sample in SKIP or "." in sample.rsplit("/", 1)[-1]:
            continue
        url = sample.format(**world).split("?")[0]
        page = client.get(url)
        if page.status_code != 200 or "html" not in page.get("Content-Type", ""):
            continue
        parsed = Fields()
        parsed.feed(page.content.decode())
        for name in {*PARAMS, *parsed.links}:
            out.add(("get", url, name))
        for method, action, names in parsed.forms:
            target = action or url
            if method == "post" and not re.search(r"logout|finalise|revoke", target):
                out.update(("post", target, name) for name in names if name != "csrfmiddlewaretoken")
            elif method == "get":
                out.update(("get", target, name) for name in names)
    return sorted(out)


HOSTILE = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["\x00", "a\x00b", "\x1b[31m", "²", "٣", "0000-01", "9999-12", "-1", "9" * 30, "1e309", "%", "{}", "[" * 200]
    ),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1000, max_size=5000),
)


@pytest.mark.parametrize("role", ["olivia", "fiona"])
def test_no_text_in_any_page_field_gets_a_server_error(request: pytest.FixtureRequest, world: dict[str, Any], role: str) -> None:
    client = Client(raise_request_exception=False)
    client.force_login(request.getfixturevalue(role))
    found = targets(client, world)
    assert len(found) > 20, found  # the walk reached the pages

    @settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(target=st.sampled_from(found), value=HOSTILE)
    def check(target: tuple[str, str, str], value: str) -> None:
        method, url, field = target
        response = client.get(url, {field: value}) if method == "get" else client.post(url, {field: value})
        assert response.status_code < 500, (method, url, field, value[:60], response.status_code)

    check()
