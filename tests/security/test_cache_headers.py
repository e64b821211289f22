"""Nothing a signed-in user is shown is kept by a browser or proxy cache."""

from __future__ import annotations

from typing import Any

import pytest

from portal.models import User


@pytest.mark.parametrize("path", ["/", "/jobs/", "/tokens/", "/teams/", "/api/v1/jobs/", "/api/v1/me/"])
def test_signed_in_pages_and_api_answers_are_no_store(web: Any, api: Any, alice: User, grid: Any, path: str) -> None:
    client = api(alice) if path.startswith("/api/") else web(alice)
    response = client.get(path)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]


def test_the_page_that_shows_a_new_token_is_no_store(web: Any, alice: User) -> None:
    response = web(alice).post("/tokens/", {"name": "laptop"}, follow=True)
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
