"""Settings of the reference server: the portal's database configuration (pool included), nothing else."""

import os
from pathlib import Path

from portal.env import parse_database_url

SECRET_KEY = os.environ["SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.list_reference.views"
DATABASES = {"default": parse_database_url(os.environ["DATABASE_URL"], Path(__file__).resolve().parent).as_django()}
USE_TZ = True
TIME_ZONE = "UTC"
