"""Settings for the test suite: PostgreSQL by default (DATABASE_URL), simulator, eager Celery.

Outside CI a missing PostgreSQL falls back to SQLite and tests marked `postgres` skip; under
CI=true a missing PostgreSQL stops the run.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gridportal")
os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "true")
os.environ.setdefault("SIM_FAILURE_RATE", "0")
os.environ.setdefault("PORTAL_DATA_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), "var", "test"))
os.environ.pop("REDIS_URL", None)  # tests that need Redis ask for it with the `redis` fixture

from tests.services import postgres_reachable

POSTGRES_AVAILABLE = postgres_reachable(os.environ["DATABASE_URL"])
if not POSTGRES_AVAILABLE:
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"CI=true and PostgreSQL is not reachable at {os.environ['DATABASE_URL']}")
    os.environ["DATABASE_URL"] = "sqlite:///var/test/tests.sqlite3"

from grid.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
ALLOWED_HOSTS = ["*"]
TOKEN_AUTH_FAILURE_LIMIT = 100_000  # the cache outlives a test: unrelated tests with bad tokens must not trip it

# Each test run gets its own database, so concurrent runs on one machine never collide.
if str(DATABASES["default"]["ENGINE"]).endswith("postgresql"):  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": f"test_gridportal_{os.getpid()}"}  # noqa: F405
