"""Django settings, all read from the environment (see README "Configuration")."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import plotly
from celery.schedules import crontab

from portal.env import (
    ConfigError,
    env_bool,
    env_choice,
    env_command,
    env_float,
    env_int,
    env_list,
    env_secret,
    env_str,
    parse_database_url,
    validate_redis_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("PORTAL_DATA_DIR", str(BASE_DIR / "var")) or "var")
DATA_DIR.mkdir(parents=True, exist_ok=True)  # the SQLite file and the file broker live here

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_secret("SECRET_KEY") or ""
if not SECRET_KEY:
    if not DEBUG:
        raise ConfigError("SECRET_KEY is required when DEBUG is off (set SECRET_KEY, or DEBUG=true for development)")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "portal",
    "cluster",
    "bursting",
    "quotas",
    "jobs",
    "billing",
    "artifacts",
    "sweeps",
    "notebooks",
    "recovery",
    "grid",  # the top layer: pages and cycles across the apps (docs/architecture.md)
]

MIDDLEWARE = [
    "portal.logging.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "portal.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "portal.inputs.StrictInputMiddleware",
    "portal.security.NoStoreForSignedInMiddleware",
    "portal.security.AdminLoginLimitMiddleware",
    "notebooks.origin.notebook_host_only",  # NOTEBOOK_ORIGIN's host serves notebooks and nothing else
]

ROOT_URLCONF = "grid.urls"
ASGI_APPLICATION = "grid.asgi.application"
WSGI_APPLICATION = "grid.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "builtins": ["portal.templatetags.money"],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "grid.context.nav",
            ],
        },
    },
]

DATABASES = {
    "default": parse_database_url(env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'portal.sqlite3'}") or "", BASE_DIR).as_django()
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "portal.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
# plotly.min.js is served from the installed plotly package, so pages never need a CDN.
STATICFILES_DIRS = [BASE_DIR / "static", ("plotly", Path(plotly.__file__).parent / "package_data")]
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "dashboard"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
ACCOUNT_LOGIN_METHODS = {"username", "email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "username*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
# Accounts are created by operators (or by the identity provider); no open self-signup.
ACCOUNT_ADAPTER = "portal.accounts.NoSignupAccountAdapter"
SOCIALACCOUNT_ONLY = False
# Single sign-on through an OpenID Connect provider (docs/security.md, "Single sign-on"): it may
# create accounts, and each sign-in sets the user's teams from a claim (portal/oidc.py).
SOCIALACCOUNT_ADAPTER = "portal.accounts.IdentityProviderAdapter"
OIDC_CLIENT_ID = env_str("OIDC_CLIENT_ID")
OIDC_SERVER_URL = env_str("OIDC_SERVER_URL", "") or ""
OIDC_SCOPES = env_list("OIDC_SCOPES", ["openid", "profile", "email"])
OIDC_TEAMS_CLAIM = env_str("OIDC_TEAMS_CLAIM", "groups") or "groups"
OIDC_TEAM_PREFIX = env_str("OIDC_TEAM_PREFIX", "") or ""
OIDC_LEAD_SUFFIX = env_str("OIDC_LEAD_SUFFIX", "-lead") or ""
OIDC_OPERATOR_GROUP = env_str("OIDC_OPERATOR_GROUP", "") or ""
OIDC_RP_LOGOUT = env_bool("OIDC_RP_LOGOUT", False)  # sign-out also ends the provider's session
# Off by default: only a provider that verifies e-mail addresses may sign in an existing account by its address.
SOCIALACCOUNT_EMAIL_AUTHENTICATION = env_bool("OIDC_EMAIL_AUTHENTICATION", False)
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = SOCIALACCOUNT_EMAIL_AUTHENTICATION
SOCIALACCOUNT_PROVIDERS: dict[str, object] = {}
if OIDC_CLIENT_ID:
    if not OIDC_SERVER_URL.startswith(("https://", "http://")):
        raise ConfigError(f"OIDC_SERVER_URL={OIDC_SERVER_URL!r}: the provider's http(s) URL is required with OIDC_CLIENT_ID")
    SOCIALACCOUNT_PROVIDERS["openid_connect"] = {
        "SCOPE": OIDC_SCOPES,
        "OAUTH_PKCE_ENABLED": env_bool("OIDC_PKCE", True),  # off only for a provider that rejects it
        "APPS": [
            {
                "provider_id": "sso",
                "name": env_str("OIDC_NAME", "Single sign-on"),
                "client_id": OIDC_CLIENT_ID,
                "secret": env_str("OIDC_CLIENT_SECRET", ""),
                "settings": {"server_url": OIDC_SERVER_URL},
            }
        ],
    }

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")

REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.security.RateLimitedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "portal.pagination.IdCursorPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "GPU Grid Portal API",
    "DESCRIPTION": "Submit and watch GPU jobs, read teams, templates, pools and nodes.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the portal's own static files (drf-spectacular-sidecar), under the normal CSP.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Several models have a `state` or `kind`; name each choice set after what it is.
    "ENUM_NAME_OVERRIDES": {
        "JobStateEnum": "jobs.states.JobState",
        "NodeStateEnum": "cluster.states.NodeState",
        "JobKindEnum": "jobs.models.JobKind",
        "PoolKindEnum": "cluster.states.PoolKind",
    },
}

# Redis is optional: with it, Celery and Channels span processes; without it, Celery uses a
# broker kept in files under DATA_DIR and Channels an in-process layer.
REDIS_URL = validate_redis_url(env_str("REDIS_URL"))
if REDIS_URL:
    # Rides out a Redis outage: pushes are dropped, sockets stay open, groups are re-joined after.
    CHANNEL_LAYERS = {"default": {"BACKEND": "portal.channel_layer.ResilientRedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
    CELERY_BROKER_URL = REDIS_URL
    # kombu's Redis transport, but a worker that loses Redis mid-task stays up (portal/broker.py).
    CELERY_BROKER_TRANSPORT = "portal.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CELERY_BROKER_URL = "filesystem://"
    _broker_dir = str(DATA_DIR / "broker")
    for _folder in ("broker", "broker-done", "broker-control"):
        (DATA_DIR / _folder).mkdir(exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": _broker_dir,
        "data_folder_out": _broker_dir,
        "processed_folder": str(DATA_DIR / "broker-done"),
        "control_folder": str(DATA_DIR / "broker-control"),  # else kombu writes ./control/ in the working directory
        "store_processed": False,
    }
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker that lost the broker tries again every BROKER_RETRY_S seconds for as long as it takes
# (Celery's default backs off to 30 s and gives up after 100 tries); see portal.celery.PromptConsumer.
CELERY_WORKER_CONSUMER = "portal.celery:PromptConsumer"
CELERY_BROKER_RETRY_S = env_float("BROKER_RETRY_S", 1.0, minimum=0.1, maximum=60)
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
GRID_CYCLE_S = env_float("GRID_CYCLE_S", 2.0, minimum=0.2, maximum=300)
CELERY_BEAT_SCHEDULE = {
    "admission-cycle": {"task": "jobs.tasks.admission_cycle", "schedule": GRID_CYCLE_S},
    "sync-backend": {"task": "jobs.tasks.sync_backend", "schedule": GRID_CYCLE_S},
    "sync-nodes": {"task": "cluster.tasks.sync_nodes", "schedule": GRID_CYCLE_S * 5},
    "record-grid-sample": {"task": "jobs.tasks.record_grid_sample", "schedule": 5.0},
    "reap-stale": {"task": "jobs.tasks.reap_stale", "schedule": 30.0},
}

# The cluster behind the portal.
CLUSTER_BACKEND = env_choice("CLUSTER_BACKEND", "simulator", ("simulator", "slurm", "kubernetes", "slurm+kubernetes"))
# Follow the backend closely: job ends noticed within 50 ms and their GPUs refilled at once (docs/slurm.md
# "Following"), by a follow_backend task every FOLLOW_BACKEND_S seconds that follows for as long. 0 turns it
# off; the periodic sync stays the reconciler either way. On by default for Slurm, off for the simulator.
FOLLOW_BACKEND_S = env_float(
    "FOLLOW_BACKEND_S", 10.0 if CLUSTER_BACKEND in ("slurm", "slurm+kubernetes") else 0.0, minimum=0.0, maximum=300
)
if FOLLOW_BACKEND_S:
    CELERY_BEAT_SCHEDULE["follow-backend"] = {
        "task": "jobs.tasks.follow_backend",
        "schedule": FOLLOW_BACKEND_S,
        "args": (FOLLOW_BACKEND_S,),
        "options": {"expires": FOLLOW_BACKEND_S},  # a late one is replaced by the next, never stacked
    }
# Simulated grid: pools as NAME:KIND:MODEL:NODESxGPUS, comma separated.
SIM_POOLS = env_str("SIM_POOLS", "onprem-a100:onprem:a100:4x8,onprem-h100:onprem:h100:2x8,burst-a10g:cloud:a10g:0x4") or ""
SIM_SPEED = env_float("SIM_SPEED", 60.0, minimum=0.01, maximum=1e6)
SIM_FAILURE_RATE = env_float("SIM_FAILURE_RATE", 0.08, minimum=0.0, maximum=1.0)
# A slow controller on demand: seconds each submit takes after the job exists (crash drills widen this window).
SIM_SUBMIT_DELAY_S = env_float("SIM_SUBMIT_DELAY_S", 0.0, minimum=0.0, maximum=60.0)

# Billing: one currency for the site (docs/billing.md has the rounding rule).
BILLING_CURRENCY = env_str("BILLING_CURRENCY", "EUR") or "EUR"
BILLING_ISSUER = env_str("BILLING_ISSUER", "GPU Grid") or "GPU Grid"
CELERY_BEAT_SCHEDULE |= {
    "billing-draft-last-month": {
        "task": "billing.tasks.draft_last_month_invoices",
        "schedule": crontab(minute=0, hour=2, day_of_month="1"),
    },
    "billing-meter-usage": {"task": "billing.tasks.meter_usage", "schedule": 300.0},
    "billing-evaluate-budgets": {"task": "billing.tasks.evaluate_budgets", "schedule": 900.0},
}

# Slurm backend (docs/slurm.md). Defaults match scripts/slurm-dev-cluster.
SLURM_REST_URL = env_str("SLURM_REST_URL", "http://127.0.0.1:6820")
SLURM_SERVICE_USER = env_str("SLURM_SERVICE_USER", "gridportal")
SLURM_JWT_KEY_FILE = env_str("SLURM_JWT_KEY_FILE", "/etc/slurm/jwt_hs256.key")
SLURM_OUTPUT_DIR = env_str("SLURM_OUTPUT_DIR", "/var/tmp/portal-slurm")
SLURM_PARTITIONS = env_str("SLURM_PARTITIONS", "") or ""  # a100=gpu-a100,h100=gpu-h100; default: partition = model
SLURM_CLOUD_PARTITIONS = env_str("SLURM_CLOUD_PARTITIONS", "") or ""
SLURM_TIMEOUT_S = env_int("SLURM_TIMEOUT_S", 15, minimum=1, maximum=600)
# GPUs of admitted jobs Slurm may hold queued beyond its free GPUs, started by Slurm itself as GPUs free
# (docs/slurm.md "Backlog"); they count against their team's quota like running jobs. 0 turns it off.
SLURM_BACKLOG = env_int("SLURM_BACKLOG", 64, minimum=0, maximum=4096)
# Which jobs Slurm must start on the nodes the portal placed them on (`required_nodes`): multi-node
# gangs (default), every job, or none (Slurm picks within the partition).
SLURM_PIN_NODES = env_choice("SLURM_PIN_NODES", "gangs", ("gangs", "all", "none"))

# Kubernetes backend (docs/kubernetes.md).
K8S_KUBECONFIG = env_str("K8S_KUBECONFIG", "") or ""
K8S_CONTEXT = env_str("K8S_CONTEXT", "") or ""
K8S_IN_CLUSTER = env_bool("K8S_IN_CLUSTER", False)
K8S_TIMEOUT_S = env_float("K8S_TIMEOUT_S", 10.0, minimum=0.5, maximum=600)
K8S_NAMESPACE_PREFIX = env_str("K8S_NAMESPACE_PREFIX", "team-") or "team-"
K8S_QUEUE_PREFIX = env_str("K8S_QUEUE_PREFIX", "team-") or "team-"
K8S_SCHEDULER_NAME = env_str("K8S_SCHEDULER_NAME", "volcano") or "volcano"
K8S_CHECKPOINT_VOLUME = env_choice("K8S_CHECKPOINT_VOLUME", "pvc", ("pvc", "emptydir"))
K8S_CHECKPOINT_CLAIM = env_str("K8S_CHECKPOINT_CLAIM", "checkpoints") or "checkpoints"
K8S_DEFAULT_IMAGE = env_str("K8S_DEFAULT_IMAGE", "") or ""
K8S_NODE_POOL_LABEL = env_str("K8S_NODE_POOL_LABEL", "portal.gpugrid.io/pool") or "portal.gpugrid.io/pool"
K8S_BURST_MACHINEDEPLOYMENTS = env_str("K8S_BURST_MACHINEDEPLOYMENTS", "") or ""  # pool=namespace/name,...
K8S_CONFLICT_RETRIES = env_int("K8S_CONFLICT_RETRIES", 3, minimum=0, maximum=20)
# The label of the dcgm-exporter pods (the GPU Operator's DaemonSet), to find the node of an exporter
# whose `Hostname` is its pod's name when Prometheus did not add the node (cluster/telemetry/hosts.py).
K8S_EXPORTER_SELECTOR = env_str("K8S_EXPORTER_SELECTOR", "app=nvidia-dcgm-exporter") or "app=nvidia-dcgm-exporter"
K8S_PORTAL_NAMESPACE = env_str("K8S_PORTAL_NAMESPACE", "gpu-grid-portal") or "gpu-grid-portal"
K8S_SERVICE_ACCOUNT = env_str("K8S_SERVICE_ACCOUNT", "gpu-grid-portal") or "gpu-grid-portal"

# Limits on what a job may ask for (a template may set tighter ones).
JOB_MAX_WALLTIME_S = env_int("JOB_MAX_WALLTIME_S", 7 * 24 * 3600, minimum=60, maximum=365 * 24 * 3600)
JOB_MAX_SCRIPT_BYTES = env_int("JOB_MAX_SCRIPT_BYTES", 64 * 1024, minimum=1024, maximum=10 * 1024 * 1024)
JOB_MAX_ARRAY_SIZE = env_int("JOB_MAX_ARRAY_SIZE", 1000, minimum=1, maximum=100_000)
# Submissions validate against the grid's shape (GPUs per model, priority classes) kept this long per
# process; a change made in the same process is seen at once, one made elsewhere within this time.
SUBMIT_GRID_CACHE_S = env_float("SUBMIT_GRID_CACHE_S", 5.0, minimum=0.0, maximum=300.0)
DEFAULT_TEAM_GPU_LIMIT = env_int("DEFAULT_TEAM_GPU_LIMIT", 16, minimum=0, maximum=1_000_000)
# A start estimate is shown as a range: its wait scaled by these (10th/90th percentile of actual over
# estimated wait in the trace replay, `replay_trace --estimates`; docs/scheduler.md).
# Measured on tests/fixtures/traces/itp-dev.csv, 96 x 8 GPUs, fair policy: p10 1.0, p50 9.8, p90 51.7.
START_ESTIMATE_RATIO_LOW = env_float("START_ESTIMATE_RATIO_LOW", 1.0, minimum=0.0, maximum=1.0)
START_ESTIMATE_RATIO_HIGH = env_float("START_ESTIMATE_RATIO_HIGH", 51.7, minimum=1.0, maximum=1000.0)
# Jobs that may wait at once, per team and per user; a submit past either answers 400 naming pending_jobs.
MAX_PENDING_JOBS_PER_TEAM = env_int("MAX_PENDING_JOBS_PER_TEAM", 5_000, minimum=1, maximum=10_000_000)
MAX_PENDING_JOBS_PER_USER = env_int("MAX_PENDING_JOBS_PER_USER", 2_000, minimum=1, maximum=10_000_000)
# Fair share: usage history loses half its weight every this many seconds (Slurm's PriorityDecayHalfLife).
FAIRSHARE_HALF_LIFE_S = env_float("FAIRSHARE_HALF_LIFE_S", 7 * 24 * 3600.0, minimum=60, maximum=365 * 24 * 3600)
# Fair share counts a team's idle allocation against it: its usage ranks as if (1 + this x its idle
# share) times what it is, the idle share from the telemetry over the last half-life. 0: off.
FAIRSHARE_IDLE_WEIGHT = env_float("FAIRSHARE_IDLE_WEIGHT", 0.0, minimum=0.0, maximum=10.0)
# Seconds a preempted job gets to checkpoint before it is stopped (on backends that can signal).
PREEMPT_GRACE_S = env_int("PREEMPT_GRACE_S", 120, minimum=0, maximum=3600)
# A job that stays admitted this long without reaching the backend is dispatched again.
DISPATCH_STALE_S = env_float("DISPATCH_STALE_S", 60.0, minimum=1, maximum=86400)

# Bearer token Prometheus presents to scrape the simulator's and the portal's metrics.
METRICS_TOKEN = env_str("METRICS_TOKEN") or ""

LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
# json: one object per line with time, level, logger, message, request_id, user, path, status, job_id.
LOG_FORMAT = env_choice("LOG_FORMAT", "plain", ("plain", "json"))
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # workers log through LOGGING, like the web processes
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "portal.logging.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # One access line per request is for log pipelines (json); a terminal (plain) keeps quiet.
        "portal.request": {"level": "INFO" if LOG_FORMAT == "json" else "WARNING"},
    },
}

# Secrets come from the environment or from files (NAME_FILE), never from the repository.
if _db_password := env_secret("DATABASE_PASSWORD"):
    DATABASES["default"]["PASSWORD"] = _db_password
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)  # deployments set it; check --deploy says so
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0, maximum=63_072_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
ACCOUNT_RATE_LIMITS = {"login": "30/m/ip", "login_failed": "10/m/ip,5/5m/key", "reset_password": "5/m/ip,3/m/key"}
# Failed `Authorization: Token` attempts per client address before 429.
TOKEN_AUTH_FAILURE_LIMIT = env_int("TOKEN_AUTH_FAILURE_LIMIT", 20, minimum=1, maximum=10_000)
TOKEN_AUTH_FAILURE_WINDOW_S = env_int("TOKEN_AUTH_FAILURE_WINDOW_S", 300, minimum=1, maximum=86_400)
# A verified API token is kept this long in the shared Redis cache (revocation drops it at once); 0: never.
API_TOKEN_CACHE_S = env_int("API_TOKEN_CACHE_S", 10, minimum=0, maximum=300)
# Wrong passwords on /admin/login/ before that account (from anywhere) or that address waits the window out.
ADMIN_LOGIN_FAILURE_LIMIT = env_int("ADMIN_LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1_000)
ADMIN_LOGIN_FAILURE_WINDOW_S = env_int("ADMIN_LOGIN_FAILURE_WINDOW_S", 300, minimum=1, maximum=86_400)
# How many reverse proxies append to X-Forwarded-For in front of the portal; 0 (default): the header is ignored.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=10)
ALLAUTH_TRUSTED_PROXY_COUNT = TRUSTED_PROXY_COUNT
if REDIS_URL:  # rate-limit counters shared by every process; each process counts alone while Redis is down
    CACHES = {"default": {"BACKEND": "portal.cache.ResilientRedisCache", "LOCATION": REDIS_URL}}

# --- GPU telemetry and safeguards (docs/telemetry.md) -------------------------------------------
# Unset: telemetry comes from the simulator directly, so the embedded default needs no servers.
PROMETHEUS_URL = env_str("PROMETHEUS_URL", "") or ""
PROMETHEUS_TIMEOUT_S = env_float("PROMETHEUS_TIMEOUT_S", 2.0, minimum=0.1, maximum=60)
# Ask Prometheus for gzip answers: worth it across a slow link, a cost on a local one (docs/telemetry.md).
PROMETHEUS_COMPRESS = env_bool("PROMETHEUS_COMPRESS", False)
# Overrides of dcgm-exporter metric/label names and units, e.g. host_labels=hostname,utilization_scale=100.
TELEMETRY_NAMES = env_str("TELEMETRY_NAMES", "") or ""
TELEMETRY_SCRAPE_INTERVAL_S = env_int("TELEMETRY_SCRAPE_INTERVAL_S", 2, minimum=1, maximum=60)
TELEMETRY_CYCLE_S = env_float("TELEMETRY_CYCLE_S", 2.0, minimum=0.5, maximum=300)
TELEMETRY_STALE_AFTER_S = env_float("TELEMETRY_STALE_AFTER_S", 15.0, minimum=1, maximum=3600)
# Pages get GPU telemetry pushed by the cycle (needs a channel layer shared across processes, i.e. Redis);
# without it each page's websocket reads the (simulated) telemetry itself.
# With Prometheus the cycle reads per-node and per-job summaries, not every GPU: pages read what they
# show themselves (once per process per tick), so the default is off there.
TELEMETRY_PUSH = env_bool("TELEMETRY_PUSH", bool(REDIS_URL) and not PROMETHEUS_URL)
# How often the jobs' efficiency sums are read from Prometheus' recorded summaries (grid.telemetry.account_efficiency).
TELEMETRY_ACCOUNTING_S = env_float("TELEMETRY_ACCOUNTING_S", 60.0, minimum=5, maximum=3600)
# What the `hpc_job` label holds: the portal job id (simulator) or the backend's job id (Slurm's HPC job mapping).
TELEMETRY_HPC_JOB_ID = env_choice("TELEMETRY_HPC_JOB_ID", "portal", ("portal", "backend"))
TELEMETRY_POD_JOB_PATTERN = env_str("TELEMETRY_POD_JOB_PATTERN", r"^gp-(\d+)(?:-|$)") or r"^gp-(\d+)(?:-|$)"
# Thermal guard: CORDON:CLEAR in °C (the gap is the hysteresis band), per GPU model as model=CORDON:CLEAR.
GUARD_ENABLED = env_bool("GUARD_ENABLED", True)
GUARD_THERMAL_C = env_str("GUARD_THERMAL_C", "85:75") or "85:75"
GUARD_THERMAL_MODELS = env_str("GUARD_THERMAL_MODELS", "h100=87:77,l4=82:72") or ""
GUARD_HOT_WINDOW_S = env_float("GUARD_HOT_WINDOW_S", 30.0, minimum=0, maximum=86400)
GUARD_COOL_WINDOW_S = env_float("GUARD_COOL_WINDOW_S", 300.0, minimum=0, maximum=86400)
GUARD_DRAIN = env_bool("GUARD_DRAIN", False)  # drain rather than only cordon a node the guard takes out
GUARD_OVERRIDE_S = env_float("GUARD_OVERRIDE_S", 3600.0, minimum=60, maximum=30 * 86400)
# Idle GPUs: activity below IDLE_THRESHOLD for IDLE_WARN_AFTER_S warns; IDLE_ACT_AFTER_S later the team's action.
IDLE_THRESHOLD = env_float("IDLE_THRESHOLD", 0.05, minimum=0, maximum=1)
IDLE_WARN_AFTER_S = env_float("IDLE_WARN_AFTER_S", 1800.0, minimum=0, maximum=7 * 86400)
IDLE_ACT_AFTER_S = env_float("IDLE_ACT_AFTER_S", 1800.0, minimum=0, maximum=7 * 86400)
IDLE_ACTION = env_choice("IDLE_ACTION", "warn", ("warn", "stop", "reclaimable"))
IDLE_TEAM_ACTIONS = env_str("IDLE_TEAM_ACTIONS", "") or ""  # team=stop|reclaimable|warn,...
# /metrics: a bearer METRICS_TOKEN, an operator session, or a client address in these networks.
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", [])


def _check_telemetry_settings() -> None:
    """Fail at start-up, naming the variable, rather than at the first telemetry cycle."""
    from cluster.safeguards import parse_team_actions, parse_thermal
    from cluster.telemetry.names import NamesError, parse_names

    try:
        parse_names(TELEMETRY_NAMES)
        parse_thermal(GUARD_THERMAL_C, GUARD_THERMAL_MODELS, GUARD_HOT_WINDOW_S, GUARD_COOL_WINDOW_S)
        parse_team_actions(IDLE_TEAM_ACTIONS)
    except (NamesError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


_check_telemetry_settings()
CELERY_BEAT_SCHEDULE["telemetry-cycle"] = {"task": "grid.tasks.telemetry_cycle", "schedule": TELEMETRY_CYCLE_S}
CELERY_BEAT_SCHEDULE["efficiency-accounting"] = {"task": "grid.tasks.efficiency_accounting", "schedule": TELEMETRY_ACCOUNTING_S}

# --- Cloud bursting (docs/bursting.md) ----------------------------------------------------------
# How often the burst cycle runs: triggers, expiry, provisioning, reconciliation, idle release.
BURST_CYCLE_S = env_float("BURST_CYCLE_S", 10.0, minimum=1, maximum=3600)
# A node that fails to provision is asked for again up to this many times in all, then given up.
BURST_MAX_ATTEMPTS = env_int("BURST_MAX_ATTEMPTS", 3, minimum=1, maximum=10)
# After an operator rejects a proposal, the same policy does not propose the same pool again for this long.
BURST_REJECT_COOLDOWN_S = env_int("BURST_REJECT_COOLDOWN_S", 3600, minimum=0, maximum=7 * 86400)
# The simulator's cloud provider: boot delay, boot failures and capacity errors, drawn from the seed.
BURST_PROVISION_DELAY_S = env_float("BURST_PROVISION_DELAY_S", 45.0, minimum=0, maximum=3600)
BURST_FAILURE_RATE = env_float("BURST_FAILURE_RATE", 0.05, minimum=0, maximum=1)
BURST_CAPACITY_ERROR_RATE = env_float("BURST_CAPACITY_ERROR_RATE", 0.05, minimum=0, maximum=1)
BURST_SEED = env_int("BURST_SEED", 0, minimum=0, maximum=2**31)
# The simulated cloud behind Slurm's power-save slots (CLUSTER_BACKEND=slurm): commands run with the
# slot's name when its instance boots or is terminated (dev cluster: scripts/slurm-dev-cluster cloud-node up|down).
BURST_SIM_BOOT_COMMAND = env_command("BURST_SIM_BOOT_COMMAND")
BURST_SIM_HALT_COMMAND = env_command("BURST_SIM_HALT_COMMAND")
# Cluster API (CLUSTER_BACKEND=kubernetes): a requested machine whose node has not joined by then has failed.
BURST_CAPI_JOIN_TIMEOUT_S = env_float("BURST_CAPI_JOIN_TIMEOUT_S", 900.0, minimum=10, maximum=86400)
CELERY_BEAT_SCHEDULE["burst-cycle"] = {"task": "bursting.tasks.burst_cycle", "schedule": BURST_CYCLE_S}

# --- Backups (docs/operations.md) ---------------------------------------------------------------
# A directory or s3://bucket/prefix. S3 keys are read from BACKUP_S3_ACCESS_KEY_ID / BACKUP_S3_SECRET_ACCESS_KEY
# (or their *_FILE) when a backup runs, so they never become settings.
BACKUP_TARGET = env_str("BACKUP_TARGET", str(DATA_DIR / "backups")) or str(DATA_DIR / "backups")
BACKUP_KEEP = env_int("BACKUP_KEEP", 7, minimum=1, maximum=1000)
BACKUP_FILES_DIR = Path(env_str("BACKUP_FILES_DIR", str(DATA_DIR / "files")) or DATA_DIR / "files")
BACKUP_S3_ENDPOINT_URL = env_str("BACKUP_S3_ENDPOINT_URL")
BACKUP_S3_REGION = env_str("BACKUP_S3_REGION")
BACKUP_HOUR = env_int("BACKUP_HOUR", 1, minimum=0, maximum=23)
CELERY_BEAT_SCHEDULE["nightly-backup"] = {
    "task": "portal.tasks.nightly_backup",
    "schedule": crontab(minute=30, hour=BACKUP_HOUR),
}
CELERY_BEAT_SCHEDULE["nightly-recovery"] = {
    "task": "recovery.tasks.nightly",
    "schedule": crontab(minute=0, hour=(BACKUP_HOUR + 1) % 24),
}

# --- Artifact store (docs/artifacts.md) ----------------------------------------------------------
# Where jobs' outputs and checkpoints go: file:///srv/grid-artifacts (a local or shared path: NFS, Lustre,
# CephFS, mounted at the same path on the nodes), or s3://bucket/prefix. Empty: no store, jobs get no locations.
# S3 keys are read from ARTIFACT_S3_ACCESS_KEY_ID / ARTIFACT_S3_SECRET_ACCESS_KEY (or *_FILE) when the store is
# opened, else boto3's own chain (environment, profile, instance role).
ARTIFACT_STORE = env_str("ARTIFACT_STORE", "") or ""
ARTIFACT_S3_ENDPOINT_URL = env_str("ARTIFACT_S3_ENDPOINT_URL")
ARTIFACT_S3_REGION = env_str("ARTIFACT_S3_REGION")
# Pre-signed URLs: how long they work, and the largest single upload one may carry (S3's PUT limit is 5 GiB).
ARTIFACT_UPLOAD_URL_TTL_S = env_int("ARTIFACT_UPLOAD_URL_TTL_S", 3600, minimum=60, maximum=7 * 86400)
ARTIFACT_DOWNLOAD_URL_TTL_S = env_int("ARTIFACT_DOWNLOAD_URL_TTL_S", 300, minimum=10, maximum=86400)
ARTIFACT_MAX_UPLOAD_BYTES = env_int("ARTIFACT_MAX_UPLOAD_BYTES", 5 * 2**30, minimum=1, maximum=5 * 2**30)
# How often a simulated job (and the default a job is told) writes a checkpoint, in seconds of its work.
ARTIFACT_CHECKPOINT_INTERVAL_S = env_int("ARTIFACT_CHECKPOINT_INTERVAL_S", 300, minimum=1, maximum=86400)
# A team without a retention of its own keeps its jobs' files this many days after they finish; 0: forever.
ARTIFACT_RETENTION_DAYS = env_int("ARTIFACT_RETENTION_DAYS", 0, minimum=0, maximum=3650)
ARTIFACT_PURGE_BATCH = env_int("ARTIFACT_PURGE_BATCH", 100, minimum=1, maximum=10_000)
# How often each team's bytes on the store are measured (the storage billed is the bytes of each pass, kept until the next).
ARTIFACT_USAGE_INTERVAL_S = env_float("ARTIFACT_USAGE_INTERVAL_S", 3600.0, minimum=60, maximum=86400)
CELERY_BEAT_SCHEDULE["artifact-usage"] = {"task": "artifacts.tasks.measure_usage", "schedule": ARTIFACT_USAGE_INTERVAL_S}
CELERY_BEAT_SCHEDULE["artifact-retention"] = {"task": "artifacts.tasks.purge_expired", "schedule": ARTIFACT_USAGE_INTERVAL_S}

# Sweeps (docs/sweeps.md): the most trials one sweep may have and may run at once, what a trial may
# report, the address a trial's job reports to, and how often running sweeps are advanced.
SWEEP_MAX_TRIALS = env_int("SWEEP_MAX_TRIALS", 500, minimum=1, maximum=100_000)
SWEEP_MAX_PARALLEL = env_int("SWEEP_MAX_PARALLEL", 32, minimum=1, maximum=10_000)
SWEEP_MAX_REPORTS_PER_TRIAL = env_int("SWEEP_MAX_REPORTS_PER_TRIAL", 10_000, minimum=1, maximum=1_000_000)
SWEEP_MAX_STEP = env_int("SWEEP_MAX_STEP", 10**9, minimum=1, maximum=2**31 - 1)
SWEEP_REPORT_BASE_URL = (env_str("SWEEP_REPORT_BASE_URL", "http://localhost:8000") or "").rstrip("/")
SWEEP_CYCLE_S = env_float("SWEEP_CYCLE_S", 15.0, minimum=1, maximum=3600)
CELERY_BEAT_SCHEDULE["sweep-cycle"] = {"task": "sweeps.tasks.advance_sweeps", "schedule": SWEEP_CYCLE_S}

# Notebooks (docs/notebooks.md): server types offered, lifetimes, GPUs per session, the culling rule
# (kernel AND GPUs idle for NOTEBOOK_IDLE_S; the owner warned NOTEBOOK_WARN_S before), how long a
# started job's server has to answer, and where sessions run their servers on each backend.
NOTEBOOK_SERVER_TYPES = env_list("NOTEBOOK_SERVER_TYPES", ["jupyter", "code-server"])
if _unknown_server_types := sorted(set(NOTEBOOK_SERVER_TYPES) - {"jupyter", "code-server"}):
    raise ConfigError(f"NOTEBOOK_SERVER_TYPES: {', '.join(_unknown_server_types)} is not a server type (jupyter, code-server)")
NOTEBOOK_MAX_LIFETIME_S = env_int("NOTEBOOK_MAX_LIFETIME_S", 12 * 3600, minimum=60, maximum=14 * 86400)
NOTEBOOK_DEFAULT_LIFETIME_S = env_int("NOTEBOOK_DEFAULT_LIFETIME_S", 4 * 3600, minimum=60, maximum=NOTEBOOK_MAX_LIFETIME_S)
NOTEBOOK_MAX_GPUS = env_int("NOTEBOOK_MAX_GPUS", 8, minimum=1, maximum=64)
NOTEBOOK_IDLE_S = env_float("NOTEBOOK_IDLE_S", 3600.0, minimum=1, maximum=7 * 86400)
NOTEBOOK_WARN_S = env_float("NOTEBOOK_WARN_S", 600.0, minimum=0, maximum=86400)
NOTEBOOK_START_TIMEOUT_S = env_int("NOTEBOOK_START_TIMEOUT_S", 300, minimum=5, maximum=3600)
NOTEBOOK_CYCLE_S = env_float("NOTEBOOK_CYCLE_S", 30.0, minimum=1, maximum=3600)
NOTEBOOK_WORK_DIR = env_str("NOTEBOOK_WORK_DIR", "/tmp/grid-notebooks") or "/tmp/grid-notebooks"
NOTEBOOK_NODE_PYTHON = env_str("NOTEBOOK_NODE_PYTHON", "python3") or "python3"
NOTEBOOK_NODE_HOST = env_str("NOTEBOOK_NODE_HOST", "") or ""  # empty: the node's `hostname -f`
NOTEBOOK_IMAGE = env_str("NOTEBOOK_IMAGE", "quay.io/jupyter/base-notebook:2025-01-13") or "quay.io/jupyter/base-notebook"
# code-server: the command on the nodes (and, on the simulator, on the portal's machine), and its image on Kubernetes.
NOTEBOOK_CODE_SERVER = env_str("NOTEBOOK_CODE_SERVER", "code-server") or "code-server"
NOTEBOOK_CODE_SERVER_IMAGE = env_str("NOTEBOOK_CODE_SERVER_IMAGE", "") or "codercom/code-server:4.139.1"
# Notebooks on an origin of their own (notebooks/origin.py): e.g. https://notebooks.grid.example, a host
# whose cookies the portal's do not share. Empty: proxied in the portal's origin.
NOTEBOOK_ORIGIN = (env_str("NOTEBOOK_ORIGIN", "") or "").rstrip("/")
if NOTEBOOK_ORIGIN:
    if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d+)?", NOTEBOOK_ORIGIN):
        raise ConfigError(
            f"NOTEBOOK_ORIGIN={NOTEBOOK_ORIGIN!r}: give scheme://host[:port], no path (e.g. https://notebooks.grid.example)"
        )
    ALLOWED_HOSTS = [*ALLOWED_HOSTS, NOTEBOOK_ORIGIN.split("://", 1)[1].split(":", 1)[0]]
CELERY_BEAT_SCHEDULE["notebook-cull"] = {"task": "notebooks.tasks.cull_notebooks", "schedule": NOTEBOOK_CYCLE_S}

# Checkpoint recovery (docs/recovery.md): each night, an hour after the portal's backup, every team's
# checkpoints are copied to RECOVERY_REPLICA (s3://bucket/prefix; empty: no replica) and, on Kubernetes with
# K8S_SNAPSHOT_CLASS set, its checkpoint claim gets a VolumeSnapshot. Both are deleted after
# RECOVERY_RETENTION_DAYS, RECOVERY_BATCH at a time. S3 keys: RECOVERY_S3_ACCESS_KEY_ID / _SECRET_ACCESS_KEY (or *_FILE).
RECOVERY_REPLICA = env_str("RECOVERY_REPLICA", "") or ""
if RECOVERY_REPLICA and not RECOVERY_REPLICA.startswith("s3://"):
    raise ConfigError(f"RECOVERY_REPLICA={RECOVERY_REPLICA!r}: must be s3://bucket/prefix, or empty for no replica")
RECOVERY_S3_ENDPOINT_URL = env_str("RECOVERY_S3_ENDPOINT_URL")
RECOVERY_S3_REGION = env_str("RECOVERY_S3_REGION")
RECOVERY_RETENTION_DAYS = env_int("RECOVERY_RETENTION_DAYS", 14, minimum=1, maximum=3650)
RECOVERY_BATCH = env_int("RECOVERY_BATCH", 100, minimum=1, maximum=10_000)
RECOVERY_SNAPSHOT_WAIT_S = env_int("RECOVERY_SNAPSHOT_WAIT_S", 600, minimum=0, maximum=3600)
K8S_SNAPSHOT_CLASS = env_str("K8S_SNAPSHOT_CLASS", "") or ""  # empty: no volume snapshots
K8S_SNAPSHOT_DRIVER = env_str("K8S_SNAPSHOT_DRIVER", "") or ""  # the CSI driver the exported class names
