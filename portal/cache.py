"""The shared cache on Redis, with a per-process memory cache to fall back on while Redis is down.

Rate-limit counters and shared snapshots live here. During a Redis outage each process counts on
its own (a local limiter: limits still hold, per process) instead of failing the request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import redis
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache, RedisCacheClient

from portal.breaker import Breaker

T = TypeVar("T")
REDIS_ERRORS = (redis.RedisError, OSError)


class ReusedClientRedisCacheClient(RedisCacheClient):
    """Django's Redis cache client builds a `redis.Redis` per operation (about 0.5 ms of Python each,
    most of a cache read); this one keeps one per connection pool. `redis.Redis` is thread-safe."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        base: Any = self  # the stubs do not declare RedisCacheClient's private helpers
        pool = base._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = base._client(connection_pool=pool)
        return client


class ResilientRedisCache(RedisCache):
    """RedisCache whose reads and writes go to a memory cache while Redis is unreachable."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        options = {"socket_connect_timeout": 0.5, "socket_timeout": 1.0, **params.get("OPTIONS", {})}
        super().__init__(server, {**params, "OPTIONS": options})
        self._class = ReusedClientRedisCacheClient
        self.breaker = Breaker("redis cache", cooldown_s=float(params.get("FALLBACK_COOLDOWN_S", 2.0)))
        self.local: BaseCache = LocMemCache(f"fallback-{id(self)}", {"TIMEOUT": params.get("TIMEOUT", 300)})

    def _either(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if not self.breaker.is_open:
            method: Callable[..., Any] = getattr(super(), name)
            try:
                result = method(*args, **kwargs)
            except REDIS_ERRORS as exc:
                self.breaker.failed(exc)
            else:
                self.breaker.succeeded()
                return result
        return getattr(self.local, name)(*args, **kwargs)

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        return bool(self._either("add", key, value, timeout, version))

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return self._either("get", key, default, version)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> None:
        self._either("set", key, value, timeout, version)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        return bool(self._either("touch", key, timeout, version))

    def delete(self, key: Any, version: Any = None) -> bool:
        return bool(self._either("delete", key, version))

    def get_many(self, keys: Any, version: Any = None) -> dict[str, Any]:
        return dict(self._either("get_many", keys, version))

    def has_key(self, key: Any, version: Any = None) -> bool:
        return bool(self._either("has_key", key, version))

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> int:
        return int(self._either("incr", key, delta, version))

    def set_many(self, data: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> list[Any]:
        return list(self._either("set_many", data, timeout, version))

    def delete_many(self, keys: Any, version: Any = None) -> None:
        self._either("delete_many", keys, version)

    def clear(self) -> None:
        self.local.clear()
        self._either("clear")
