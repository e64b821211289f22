"""Settings of the bare submit endpoint: DEBUG off, persistent connections, DRF token auth."""

import os

from portal.env import parse_database_url

SECRET_KEY = os.environ.get("SECRET_KEY", "reference-only")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "rest_framework.authtoken",
    "bench.submit_reference",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.submit_reference.views"
_url = parse_database_url(os.environ["DATABASE_URL"], __import__("pathlib").Path("."))
DATABASES = {
    "default": {
        "ENGINE": _url.engine,
        "NAME": _url.name,
        "USER": _url.user,
        "PASSWORD": _url.password,
        "HOST": _url.host,
        "PORT": _url.port,
        "CONN_MAX_AGE": 600,  # one connection per sync worker, kept
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
}
