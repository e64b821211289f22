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


def test_a_blocked_prefix_does_not_lock_out_good_tokens_from_the_same_address(db: None, alice: User) -> None:
    _, key = ApiToken.issue(alice, "laptop")
    for i in range(LIMIT):
        with_token(f"gp_wrong{i}").get(ME)
    assert with_token("gp_wrong-again").get(ME).status_code == 429
    assert with_token(key).get(ME).status_code == 200  # behind one proxy or NAT, a colleague's token still works
    assert with_token("gp_wrong-again", ip="203.0.113.9").get(ME).status_code == 401


def test_hammering_a_known_tokens_prefix_blocks_that_prefix_even_for_the_real_key(db: None, alice: User) -> None:
    _, key = ApiToken.issue(alice, "laptop")
    for i in range(LIMIT):
        with_token(key[:8] + f"guess{i}").get(ME)
    assert with_token(key).get(ME).status_code == 429  # from that address, until the window ends
    assert with_token(key, ip="203.0.113.9").get(ME).status_code == 200


def test_the_forwarded_address_is_read_only_behind_a_configured_proxy(db: None, settings: Settings) -> None:
    spoofed = [APIClient(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}") for i in range(LIMIT)]
    for client in spoofed:  # no proxy configured: a client cannot pick its own address
        client.credentials(HTTP_AUTHORIZATION="Token gp_wrongXYZ")
        client.get(ME)
    assert with_token("gp_wrongXYZ", ip="10.0.0.1").get(ME).status_code == 429
    cache.clear()
    settings.TRUSTED_PROXY_COUNT = 1
    for client in spoofed:  # behind one proxy: each forwarded client is counted on its own
        assert client.get(ME).status_code == 401


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


def test_the_admin_sign_in_is_limited_per_account_even_across_addresses(client: Client, olivia: User) -> None:
    olivia.is_staff = True
    olivia.save()
    for i in range(5):
        wrong = client.post("/admin/login/", {"username": "olivia", "password": f"wrong-{i}"}, REMOTE_ADDR=f"192.0.2.{i}")
        assert wrong.status_code == 200
    right = client.post("/admin/login/", {"username": "olivia", "password": "pw-for-tests"}, REMOTE_ADDR="192.0.2.99")
    assert right.status_code == 429 and right["Retry-After"]
    assert "_auth_user_id" not in client.session


def test_a_right_admin_password_before_the_limit_signs_in_and_clears_the_count(client: Client, olivia: User) -> None:
    olivia.is_staff = True
    olivia.save()
    for i in range(4):
        client.post("/admin/login/", {"username": "olivia", "password": f"wrong-{i}"}, REMOTE_ADDR="192.0.2.7")
    right = client.post("/admin/login/", {"username": "olivia", "password": "pw-for-tests"}, REMOTE_ADDR="192.0.2.8")
    assert right.status_code == 302 and client.session["_auth_user_id"] == str(olivia.pk)
