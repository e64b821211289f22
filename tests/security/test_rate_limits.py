"""Failed token logins are limited per address (429 with Retry-After); sign-in failures by allauth's limits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils.module_loading import import_string
from pytest_django import Settings
from rest_framework.test import APIClient
from rest_framework.views import APIView

from portal.models import ApiToken, User
from tests.security import production_settings

LIMIT = 5
ME = "/api/v1/teams/"  # a viewset: function views (@api_view) froze their authentication classes at import


@pytest.fixture(autouse=True)
def limited(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The proposed authentication classes. DRF copies them into APIView when it is imported, so they are patched there."""
    classes = [import_string(path) for path in production_settings.REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]]
    monkeypatch.setattr(APIView, "authentication_classes", classes)
    settings.TOKEN_AUTH_FAILURE_LIMIT = LIMIT
    settings.TOKEN_AUTH_FAILURE_WINDOW_S = 60
    settings.ACCOUNT_RATE_LIMITS = production_settings.ACCOUNT_RATE_LIMITS
    cache.clear()
    yield
    cache.clear()


def with_token(key: str, ip: str = "198.51.100.7") -> APIClient:
    client = APIClient(REMOTE_ADDR=ip)
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_the_proposed_settings_put_the_limited_authentication_first() -> None:
    assert (
        production_settings.REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"][0]
        == "portal.security.RateLimitedTokenAuthentication"
    )


def test_an_address_that_keeps_failing_gets_429_with_retry_after(db: None, alice: User) -> None:
    answers = [with_token(f"gp_wrong{i}").get(ME).status_code for i in range(LIMIT)]
    assert answers == [401] * LIMIT
    blocked = with_token("gp_wrong-again").get(ME)
    assert blocked.status_code == 429 and blocked["Retry-After"] == "60"


def test_while_blocked_even_a_good_token_from_that_address_is_refused_but_other_addresses_are_not(db: None, alice: User) -> None:
    _, key = ApiToken.issue(alice, "laptop")
    for i in range(LIMIT):
        with_token(f"gp_wrong{i}").get(ME)
    assert with_token(key).get(ME).status_code == 429
    assert with_token(key, ip="203.0.113.9").get(ME).status_code == 200


def test_good_tokens_never_count_against_an_address(db: None, alice: User) -> None:
    _, key = ApiToken.issue(alice, "ci")
    assert all(with_token(key).get(ME).status_code == 200 for _ in range(LIMIT * 3))


def test_a_revoked_token_counts_as_a_failure(db: None, alice: User) -> None:
    token, key = ApiToken.issue(alice, "old")
    client = with_token(key)
    assert client.get(ME).status_code == 200
    assert client.delete(f"/api/v1/tokens/{token.pk}/").status_code == 204
    assert [client.get(ME).status_code for _ in range(LIMIT)] == [401] * LIMIT
    assert client.get(ME).status_code == 429


def test_tokens_are_stored_only_as_their_sha256(db: None, alice: User) -> None:
    token, key = ApiToken.issue(alice, "stored")
    row = ApiToken.objects.values().get(pk=token.pk)
    assert key not in str(row) and len(row["key_hash"]) == 64 and row["prefix"] == key[:8]


def test_sign_in_failures_are_limited_per_account_even_across_addresses(client: Client, alice: User) -> None:
    for i in range(5):
        wrong = client.post("/accounts/login/", {"login": "alice", "password": f"wrong-{i}"}, REMOTE_ADDR=f"192.0.2.{i}")
        assert wrong.status_code == 200 and b"Too many failed" not in wrong.content
    right = client.post("/accounts/login/", {"login": "alice", "password": "pw-for-tests"}, REMOTE_ADDR="192.0.2.99")
    assert right.status_code == 200 and b"Too many failed login attempts" in right.content


def test_sign_in_attempts_are_limited_per_address(client: Client, alice: User, bob: User, carol: User) -> None:
    codes = [
        client.post("/accounts/login/", {"login": f"nobody{i}", "password": "x"}, REMOTE_ADDR="192.0.2.50").status_code
        for i in range(31)
    ]
    assert codes[:10] == [200] * 10 and codes[-1] == 429
