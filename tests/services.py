"""Finding the services tests need: PostgreSQL, Redis, Chromium."""

from __future__ import annotations

import os
import shutil
from urllib.parse import urlsplit


def postgres_reachable(url: str) -> bool:
    if not url.startswith(("postgres://", "postgresql://")):
        return False
    try:
        import psycopg

        parts = urlsplit(url)
        with psycopg.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=parts.username or "postgres",
            password=parts.password or "",
            dbname="postgres",
            connect_timeout=2,
        ):
            return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


def redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_reachable(url: str | None = None) -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url or redis_url(), socket_connect_timeout=1).ping())
    except Exception:  # noqa: BLE001
        return False


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None
