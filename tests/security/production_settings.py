"""portal.settings plus the security block proposed for it (docs/security.md), to test before it is applied.

Once the block is in portal/settings.py, this module changes nothing (every step is idempotent).
"""

# --- Security (docs/security.md) -----------------------------------------------------------------
from portal import env as _env
from portal.env import ConfigError, env_bool, env_int, env_str
from portal.settings import *  # noqa: F403
from portal.settings import DATABASES, DEBUG, MIDDLEWARE, REST_FRAMEWORK


def _proposed_env_secret(name: str, default: str | None = None) -> str | None:
    """The `env_secret` proposed for portal/env.py (docs/security.md); used until it is there."""
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


env_secret = getattr(_env, "env_secret", _proposed_env_secret)

SECRET_KEY = env_secret("SECRET_KEY") or SECRET_KEY  # noqa: F405 - SECRET_KEY_FILE, for Docker/Kubernetes secrets
if _db_password := env_secret("DATABASE_PASSWORD"):
    DATABASES["default"]["PASSWORD"] = _db_password
# Behind a TLS-terminating proxy: SECURE_PROXY_SSL_HEADER=true trusts its X-Forwarded-Proto.
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Off by default so plain-HTTP development and tests work; deployments set it (check --deploy says so).
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0, maximum=63_072_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if "portal.security.ContentSecurityPolicyMiddleware" not in MIDDLEWARE:
    MIDDLEWARE.insert(
        MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1, "portal.security.ContentSecurityPolicyMiddleware"
    )
REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] = [
    "portal.security.RateLimitedTokenAuthentication" if path == "portal.tokens.ApiTokenAuthentication" else path
    for path in REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]  # type: ignore[attr-defined]
]
# Sign-in: allauth counts failures per address and per account (the cache must be shared: Redis in production).
ACCOUNT_RATE_LIMITS = {"login": "30/m/ip", "login_failed": "10/m/ip,5/5m/key", "reset_password": "5/m/ip,3/m/key"}
TOKEN_AUTH_FAILURE_LIMIT = env_int("TOKEN_AUTH_FAILURE_LIMIT", 20, minimum=1, maximum=10_000)
TOKEN_AUTH_FAILURE_WINDOW_S = env_int("TOKEN_AUTH_FAILURE_WINDOW_S", 300, minimum=1, maximum=86_400)
