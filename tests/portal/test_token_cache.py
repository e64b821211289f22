"""A verified API token is kept in the shared Redis cache for seconds; revoking it, revoking all of a
user's, deactivating or deleting the user, or deleting the token ends its access on the very next
request. Without a shared cache every request reads the database."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.core.cache import caches
from django.db import connection
from django.test.utils import CaptureQueriesContext
from pytest_django import Settings
from rest_framework.test import APIClient

from portal import tokens
from portal.models import ApiToken, Membership, Team, User, hash_token

pytestmark = pytest.mark.redis


@pytest.fixture
def shared_cache(settings: Settings, redis_url_or_skip: str) -> Iterator[str]:
    """The portal's cache on the test Redis, as in production."""
    settings.CACHES = {"default": {"BACKEND": "portal.cache.ResilientRedisCache", "LOCATION": redis_url_or_skip}}
    settings.API_TOKEN_CACHE_S = 30
    caches["default"].clear()
    yield redis_url_or_skip
    caches["default"].clear()


def client_with_token(user: User) -> tuple[APIClient, ApiToken, str]:
    token, key = ApiToken.issue(user, "ci")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client, token, key


def token_lookups(client: APIClient) -> tuple[int, int]:
    """(status, how many queries read the token table) for one API request."""
    with CaptureQueriesContext(connection) as queries:
        status = client.get("/api/v1/teams/").status_code
    return status, sum(1 for q in queries.captured_queries if 'FROM "portal_apitoken"' in q["sql"])


def test_a_verified_token_is_not_looked_up_again(shared_cache: str, alice: User) -> None:
    client, _, _ = client_with_token(alice)
    assert token_lookups(client) == (200, 1)
    assert token_lookups(client) == (200, 0)
    assert token_lookups(client) == (200, 0)


def test_what_is_cached_holds_no_password_hash(shared_cache: str, alice: User) -> None:
    client, _, key = client_with_token(alice)
    assert token_lookups(client)[0] == 200
    raw = [v for k, v in redis_values(shared_cache).items() if hash_token(key) in k]
    assert len(raw) == 1
    cached = pickle.loads(raw[0])
    assert cached.user.pk == alice.pk
    assert "password" not in cached.user.__dict__  # deferred, not loaded
    assert alice.password[:20].encode() not in raw[0]


def redis_values(url: str) -> dict[str, bytes]:
    client = redis.Redis.from_url(url)
    values: dict[str, bytes] = {}
    for key in client.scan_iter("*api-token*"):
        value = client.get(key)
        values[key.decode()] = value if isinstance(value, bytes) else b""
    return values


@pytest.mark.parametrize(
    "how",
    ["revoke", "revoke_all", "deactivate", "delete_token", "delete_user"],
)
def test_access_ends_on_the_next_request(
    shared_cache: str, alice: User, how: str, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    client, token, _ = client_with_token(alice)
    assert token_lookups(client) == (200, 1)
    assert token_lookups(client) == (200, 0)  # now answered from the cache
    with django_capture_on_commit_callbacks(execute=True):
        if how == "revoke":
            assert tokens.revoke(alice, token.pk)
        elif how == "revoke_all":
            assert tokens.revoke_all(alice) == 1
        elif how == "deactivate":
            alice.is_active = False
            alice.save()
        elif how == "delete_token":
            token.delete()
        else:
            alice.delete()
    assert client.get("/api/v1/teams/").status_code == 401


def test_a_revocation_is_seen_by_every_process(shared_cache: str, alice: User, redis_url_or_skip: str) -> None:
    client, token, key = client_with_token(alice)
    assert token_lookups(client) == (200, 1)
    assert any(hash_token(key) in k for k in redis_values(redis_url_or_skip))  # shared, not per process
    tokens.revoke(alice, token.pk)
    assert not any(hash_token(key) in k for k in redis_values(redis_url_or_skip))


def test_without_a_shared_cache_every_request_reads_the_database(
    settings: Settings, alice: User, api: Callable[[User | None], APIClient]
) -> None:
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    client, _, _ = client_with_token(alice)
    assert token_lookups(client) == (200, 1)
    assert token_lookups(client) == (200, 1)


def test_a_wrong_key_is_still_refused_and_counted(shared_cache: str, alice: User, settings: Settings) -> None:
    settings.TOKEN_AUTH_FAILURE_LIMIT = 2
    client_with_token(alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token gp_wrong-key-of-the-right-length-000000000000")
    assert [client.get("/api/v1/teams/").status_code for _ in range(3)] == [401, 401, 429]


JOB = {"name": "cached", "command": ["true"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": 600}


def submit(client: APIClient, team: str) -> tuple[int, int]:
    """(status, how many queries read memberships) for one submit to `team`."""
    with CaptureQueriesContext(connection) as queries:
        status = client.post("/api/v1/jobs/", {**JOB, "team": team}, format="json").status_code
    return status, sum(1 for q in queries.captured_queries if 'FROM "portal_membership"' in q["sql"])


@pytest.mark.parametrize("how", ["leave", "join", "rename"])
def test_a_cached_user_carries_its_teams_and_a_membership_change_reaches_the_next_request(
    shared_cache: str,
    grid: Any,
    alice: User,
    vision: Team,
    render: Team,
    how: str,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    client, _, _ = client_with_token(alice)
    assert submit(client, "vision") == (201, 1)
    assert submit(client, "vision") == (201, 0)  # the teams came with the cached token
    assert submit(client, "render")[0] == 400
    with django_capture_on_commit_callbacks(execute=True):
        if how == "leave":
            Membership.objects.filter(user=alice, team=vision).delete()
        elif how == "join":
            Membership.objects.create(user=alice, team=render)
        else:
            vision.slug = "vision-2"
            vision.save()
    if how == "leave":
        assert submit(client, "vision")[0] == 400
    elif how == "join":
        assert submit(client, "render")[0] == 201
    else:
        assert submit(client, "vision")[0] == 400
        assert submit(client, "vision-2")[0] == 201
