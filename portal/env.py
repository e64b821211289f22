"""Strict parsing of settings from the environment.

Every setting comes from an environment variable, is parsed once, and a bad value stops start-up
with a message naming the variable and what it accepts.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


class ConfigError(Exception):
    """A setting from the environment is missing or malformed."""


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def env_command(name: str) -> str:
    """A command line (split like a shell would, never run through one); empty when unset."""
    raw = env_str(name) or ""
    try:
        shlex.split(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r}: not a command line ({exc})") from None
    return raw


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={raw!r}: expected one of true/false, 1/0, yes/no, on/off")


def env_float(name: str, default: float, *, minimum: float, maximum: float) -> float:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={raw!r}: must be between {minimum} and {maximum}")
    return value


def env_int(name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a whole number") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={raw!r}: must be between {minimum} and {maximum}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name, default) or default
    if value not in choices:
        raise ConfigError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = env_str(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


POOL_MAX_SIZE = 8
PERSISTENT_CONN_S = 600


def env_secret(name: str, default: str | None = None) -> str | None:
    """NAME from the environment, or the contents of the file NAME_FILE names (one trailing newline dropped)."""
    value, path = env_str(name), env_str(f"{name}_FILE")
    if value is not None and path is not None:
        raise ConfigError(f"{name} and {name}_FILE are both set; set one")
    if path is None:
        return value if value is not None else default
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read().removesuffix("\n")
    except OSError as exc:
        raise ConfigError(f"{name}_FILE={path!r}: cannot read it ({exc.strerror})") from None
    if not text.strip():
        raise ConfigError(f"{name}_FILE={path!r}: the file is empty")
    return text


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed DATABASE_URL, turned into Django's DATABASES entry by `as_django`."""

    engine: str
    name: str
    user: str = ""
    password: str = ""
    host: str = ""
    port: str = ""
    options: dict[str, str] | None = None

    def as_django(self) -> dict[str, object]:
        config: dict[str, object] = {
            "ENGINE": self.engine,
            "NAME": self.name,
            "USER": self.user,
            "PASSWORD": self.password,
            "HOST": self.host,
            "PORT": self.port,
        }
        if self.engine == "django.db.backends.sqlite3":
            # WAL lets the web server, worker and beat read while one of them writes; IMMEDIATE
            # takes the write lock at BEGIN so admission cycles serialise instead of deadlocking.
            config["OPTIONS"] = {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            }
        else:
            options: dict[str, object] = dict(self.options or {})
            if os.environ.get("PORTAL_SERVER") == "wsgi":
                # A sync worker serves one request at a time: one persistent connection per process,
                # with no pool to check it out of and back into on every request.
                config["CONN_MAX_AGE"] = PERSISTENT_CONN_S
            else:
                # Under ASGI every worker thread would keep its own persistent connection; a bounded
                # pool per process keeps PostgreSQL's connection count predictable instead.
                options.setdefault("pool", {"min_size": 1, "max_size": POOL_MAX_SIZE, "timeout": 10})
                config["CONN_MAX_AGE"] = 0
            # After a database restart the connection is tested before its first use in a request,
            # instead of failing the first request on every stale one.
            config["CONN_HEALTH_CHECKS"] = True
            # With the default random_page_cost (4, for spinning disks) PostgreSQL lists a team whose
            # jobs are all old by scanning the whole primary key backwards (0.5 s at 1M jobs) instead
            # of the (team, -id) index (0.1 ms). SSD-class storage warrants 1.1; ?options= overrides it.
            options.setdefault("options", "-c random_page_cost=1.1")
            config["OPTIONS"] = options
        return config


def parse_database_url(url: str, base_dir: Path) -> DatabaseURL:
    """Parse `sqlite:///path`, `sqlite:////abs/path` or `postgres://user:pass@host:port/name`."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        path = unquote(parts.path)
        if path.startswith("/"):
            path = path[1:]
        if not path:
            raise ConfigError(f"DATABASE_URL={url!r}: a SQLite URL needs a file, e.g. sqlite:///db.sqlite3")
        file = Path(path) if Path(path).is_absolute() else base_dir / path
        return DatabaseURL(engine="django.db.backends.sqlite3", name=str(file))
    if scheme in {"postgres", "postgresql", "pgsql"}:
        name = unquote(parts.path.lstrip("/"))
        if not name:
            raise ConfigError(f"DATABASE_URL={url!r}: a PostgreSQL URL needs a database name")
        options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        return DatabaseURL(
            engine="django.db.backends.postgresql",
            name=name,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            host=parts.hostname or "",
            port=str(parts.port or ""),
            options=options or None,
        )
    raise ConfigError(f"DATABASE_URL={url!r}: expected a sqlite:// or postgres:// URL")


def validate_redis_url(url: str | None) -> str | None:
    if url is None:
        return None
    if urlsplit(url).scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(f"REDIS_URL={url!r}: expected a redis://, rediss:// or unix:// URL")
    return url
