"""Every route x every role x read and write, with the answer each one must get.

Routes are discovered from the URLconf (with the DRF routers mounted in it) and the websocket
routing, with the walker of tests/security/test_url_coverage.py; a route without a row here fails
`test_every_route_has_a_row`. Roles are the six callers of the portal, in the columns below:

    anonymous · alice, researcher of vision (team A) · carol, researcher of render (team B)
    · bob, lead of vision · olivia, operator · fiona, finance

Every object the sample URLs point at belongs to vision. Each call runs inside a savepoint that
is rolled back, so every role meets the same data; a call the table refuses must also leave the
data exactly as it was (`fingerprint`). Methods a row does not list must be refused, or answered
as a read with nothing changed. The admin's routes follow the rule of their kind (`ADMIN_KINDS`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.apps import apps
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import connections, transaction
from django.test import Client
from django.urls import URLResolver, get_resolver, resolve
from pytest_django import Settings
from rest_framework.test import APIClient

from billing.models import Budget, Invoice, RateCard, StorageRateCard
from bursting.models import BurstProposal
from cluster.models import Node, NodeEvent
from grid.asgi import application
from jobs.models import Job, JobEvent, WhatIfRun
from portal.models import ApiToken, Membership, Team, User
from quotas.models import TeamQuota
from tests.security.conftest import ROLES
from tests.security.samples import SAMPLES
from tests.security.test_url_coverage import normalized, project_routes, websocket_routes

LOGIN = "login"  # 302 to /accounts/login/
ADMIN_LOGIN = "admin-login"  # 302 to /admin/login/
WRITES = ("post", "patch", "delete")
REFUSED = {LOGIN, ADMIN_LOGIN, 401, 403, 404, 405}
# Prefixes the walker of tests/security/test_url_coverage.py leaves to other tables; walked here from their resolvers.
MOUNTED = ("billing/", "api/v1/billing/", "console/", "api/v1/bursting/", "admin/", "accounts/")

Answers = tuple[str | int, str | int, str | int, str | int, str | int, str | int]


@dataclass(frozen=True)
class Row:
    """What each role gets on GET (None: the route serves no GET), and on each write it accepts."""

    read: Answers | None
    writes: dict[str, Answers] = field(default_factory=dict)
    body: dict[str, Any] | None = None


def R(read: Answers | None, *, body: dict[str, Any] | None = None, **writes: Answers) -> Row:
    return Row(read, writes, body)


ALL_SIGNED_IN: Answers = (LOGIN, 200, 200, 200, 200, 200)
MEMBERS: Answers = (LOGIN, 200, 404, 200, 200, 404)  # vision's members and the operator; others: not found
OPERATOR: Answers = (LOGIN, 404, 404, 404, 200, 404)  # the operator's pages are not found for anyone else
BILLING: Answers = (LOGIN, 403, 403, 200, 403, 200)  # finance, and vision's lead
SCRAPE: Answers = (403, 403, 403, 403, 200, 403)  # /metrics: an operator's session (or the bearer token)
API_ALL: Answers = (401, 200, 200, 200, 200, 200)
API_MEMBERS: Answers = (401, 200, 404, 200, 200, 404)
API_BILLING: Answers = (401, 403, 403, 200, 403, 200)
API_FINANCE_WRITE: Answers = (401, 403, 403, 403, 403, 200)
API_OPERATOR: Answers = (401, 403, 403, 403, 200, 403)
POST_ONLY: Answers = (LOGIN, 405, 405, 405, 405, 405)
OWNER: Answers = (LOGIN, 200, 404, 404, 200, 404)  # one person's (a notebook): its owner and the operator
API_OWNER: Answers = (401, 200, 404, 404, 200, 404)
PROXY: Answers = (LOGIN, 503, 404, 404, 503, 404)  # the owner and the operator reach it; it is still starting
JOB = {"name": "matrix", "command": ["python", "train.py"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": 600}

TABLE: dict[str, Row] = {
    # Pages
    "": R(ALL_SIGNED_IN),
    "healthz": R((200,) * 6),  # public; 200 and `degraded` here because no worker has sent a heartbeat
    "livez": R((200,) * 6),  # the process answers: public, says nothing else
    "metrics": R(SCRAPE),
    "sim/metrics": R(SCRAPE),
    # Notebooks are their owner's (and the operators', audited); the proxy answers them 503 while the server starts.
    "notebooks/": R(ALL_SIGNED_IN),
    "notebooks/new/": R(ALL_SIGNED_IN, post=(LOGIN, 400, 400, 400, 400, 400)),
    "notebooks/<int:notebook_id>/": R(OWNER),
    "notebooks/<int:notebook_id>/stop/": R(POST_ONLY, post=(LOGIN, 302, 404, 404, 302, 404)),
    "notebooks/<int:notebook_id>/proxy/": R(PROXY, post=PROXY),
    "notebooks/<int:notebook_id>/proxy/<path:path>": R(PROXY, post=PROXY),
    "api/v1/notebooks/": R(API_ALL, post=(401, 400, 400, 400, 400, 400)),
    "api/v1/notebooks/<int:notebook_id>/": R(API_OWNER),
    "api/v1/notebooks/<int:notebook_id>/stop/": R(None, post=(401, 200, 404, 404, 200, 404)),
    "sim/nodes/<str:node>/metrics": R(SCRAPE),
    "tokens/": R(ALL_SIGNED_IN, post=ALL_SIGNED_IN, body={"name": "matrix"}),
    "tokens/<int:token_id>/revoke/": R(POST_ONLY, post=(LOGIN, 302, 302, 302, 302, 302)),  # only alice's revokes (see below)
    "jobs/": R(ALL_SIGNED_IN),
    "jobs/new/": R(ALL_SIGNED_IN),
    # The operator and finance are in no team: they are sent back to pick a team-less page.
    "jobs/new/<slug:slug>/": R(
        (LOGIN, 200, 200, 200, 302, 302),
        post=(LOGIN, 302, 302, 302, 302, 302),
        body={
            "team": "{team}",
            "name": "matrix",
            "command": "python\ntrain.py",
            "gpu_model": "a100",
            "gpus_per_node": "1",
            "nodes": "1",
            "priority": "standard",
            "walltime": "00:10:00",
        },
    ),
    "jobs/<int:job_id>/": R(MEMBERS),
    "jobs/<int:job_id>/cancel/": R(POST_ONLY, post=(LOGIN, 302, 404, 302, 302, 404)),
    # Artifacts: no store is configured here, so a download finds no file (the stores' own tests: tests/artifacts/).
    "artifacts/jobs/<int:job_id>/": R(MEMBERS),
    "artifacts/jobs/<int:job_id>/files/<path:path>": R((LOGIN, 404, 404, 404, 404, 404)),
    "artifacts/teams/<slug:slug>/": R(MEMBERS, post=(LOGIN, 403, 404, 302, 302, 404), body={"retention_days": "30"}),
    "planning/": R(OPERATOR, post=(LOGIN, 404, 404, 404, 302, 404), body={"gpu_model": "a100", "days": "1"}),
    "planning/<int:run_id>/": R(OPERATOR),
    "planning/<int:run_id>/status": R(OPERATOR),
    "teams/": R(ALL_SIGNED_IN),
    # A researcher's POST is answered with the page, changing nothing; the lead and the operator change the quota.
    "teams/<slug:slug>/": R(MEMBERS, post=(LOGIN, 200, 404, 302, 302, 404), body={"gpu_model": "a100", "limit": "10"}),
    # Billing pages
    "billing/": R((LOGIN, 403, 403, 302, 403, 200)),  # the lead is sent to their team's page
    "billing/draft/": R(POST_ONLY, post=(LOGIN, 403, 403, 403, 403, 302), body={"month": "2025-03"}),
    "billing/rate-cards/": R(
        POST_ONLY,
        post=(LOGIN, 403, 403, 403, 403, 302),
        body={"gpu_model": "v100", "pool_kind": "onprem", "per_gpu_hour": "1.50", "valid_from": "2025-01-01"},
    ),
    "billing/storage-rates/": R(
        POST_ONLY, post=(LOGIN, 403, 403, 403, 403, 302), body={"per_gb_month": "0.02", "valid_from": "2025-01-01"}
    ),
    "billing/months/<str:month>.csv": R((LOGIN, 403, 403, 403, 403, 200)),
    "billing/teams/<slug:slug>/": R(BILLING),
    "billing/invoices/<int:invoice_id>/": R(BILLING),
    "billing/invoices/<int:invoice_id>.csv": R(BILLING),
    "billing/invoices/<int:invoice_id>.pdf": R(BILLING),
    "billing/invoices/<int:invoice_id>/finalise/": R(POST_ONLY, post=(LOGIN, 403, 403, 403, 403, 302)),
    "billing/notifications/read/": R(POST_ONLY, post=(LOGIN, 302, 302, 302, 302, 302)),  # marks the caller's own
    # The operator console
    "console/": R((302,) * 6),  # a redirect to console/nodes/, which decides
    "console/nodes/": R(OPERATOR),
    "console/nodes/<str:name>/": R(
        OPERATOR, post=(LOGIN, 404, 404, 404, 302, 404), body={"action": "cordon", "reason": "fan", "confirm": "yes"}
    ),
    "console/queues/": R(ALL_SIGNED_IN),  # each member sees only their own teams' queues
    "console/bursts/": R(OPERATOR),
    "console/bursts/<int:burst_id>/": R(OPERATOR),
    "console/bursts/<int:burst_id>/approve/": R(POST_ONLY, post=(LOGIN, 403, 403, 403, 302, 403)),
    "console/bursts/<int:burst_id>/reject/": R(POST_ONLY, post=(LOGIN, 403, 403, 403, 302, 403), body={"reason": "not now"}),
    "console/policies/": R(OPERATOR),
    "console/policies/<int:policy_id>/": R(
        OPERATOR,
        post=(LOGIN, 404, 404, 404, 302, 404),
        body={"name": "a10g-queue", "gpu_model": "a10g", "enabled": "on", "max_nodes": "2", "instance_types": "g5.12xlarge"},
    ),
    "console/recovery/": R(OPERATOR),
    "console/recovery/<int:snapshot_id>/restore/": R(POST_ONLY, post=(LOGIN, 403, 403, 403, 302, 403), body={"job": "1"}),
    "console/audit/": R(OPERATOR),
    "console/audit.csv": R(OPERATOR),
    # API documentation
    "api/schema/": R(API_ALL),
    "api/docs/": R(ALL_SIGNED_IN),
    # API
    "api/v1/": R(API_ALL),
    "api/v1/me/": R(API_ALL),
    # The operator and finance are in no team: their submission is refused field by field (400).
    "api/v1/jobs/": R(API_ALL, post=(401, 201, 201, 201, 400, 400), body={**JOB, "team": "{team}"}),
    "api/v1/jobs/<pk>/": R(API_MEMBERS),
    "api/v1/jobs/<pk>/cancel/": R(None, post=API_MEMBERS, body={"reason": "matrix"}),
    "api/v1/jobs/<pk>/events/": R(API_MEMBERS),
    "api/v1/jobs/<pk>/logs/": R(API_MEMBERS),
    "api/v1/artifacts/jobs/<int:job_id>/": R(API_MEMBERS),
    # Sweeps: the jobs' rule; the report endpoint takes a trial's token, never a session or API token.
    "sweeps/": R(ALL_SIGNED_IN),
    "sweeps/new/": R(ALL_SIGNED_IN, post=(LOGIN, 400, 400, 400, 400, 400)),
    "sweeps/<int:sweep_id>/": R(MEMBERS),
    "sweeps/<int:sweep_id>/data": R(MEMBERS),
    "sweeps/<int:sweep_id>/katib.yaml": R(MEMBERS),
    "sweeps/<int:sweep_id>/cancel/": R(None, post=(LOGIN, 302, 404, 302, 302, 404)),
    "sweeps/<int:sweep_id>/best-job/": R(None, post=(LOGIN, 302, 404, 302, 302, 404)),
    "api/v1/sweeps/": R(API_ALL, post=(401, 400, 400, 400, 400, 400)),
    "api/v1/sweeps/<int:sweep_id>/": R(API_MEMBERS),
    "api/v1/sweeps/<int:sweep_id>/cancel/": R(None, post=(401, 200, 404, 200, 200, 404)),
    "api/v1/sweeps/trials/<int:trial_id>/report": R(None, post=(401, 401, 401, 401, 401, 401)),
    # Who may ask is checked after the request is read: a request without its size is a 400 for those who see the job.
    "api/v1/artifacts/jobs/<int:job_id>/uploads/": R(None, post=(401, 400, 404, 400, 400, 404), body={"path": "output/x"}),
    "api/v1/artifacts/teams/<slug:slug>/": R(API_MEMBERS),
    "api/v1/templates/": R(API_ALL),
    "api/v1/templates/<slug>/": R(API_ALL),
    "api/v1/teams/": R(API_ALL),
    "api/v1/teams/<slug>/": R(API_MEMBERS),
    "api/v1/pools/": R(API_ALL),
    "api/v1/pools/<name>/": R(API_ALL),
    "api/v1/nodes/": R(API_ALL),
    "api/v1/nodes/<name>/": R(API_ALL),
    "api/v1/nodes/<name>/events/": R(API_ALL),
    "api/v1/nodes/<name>/cordon/": R(None, post=API_OPERATOR, body={"reason": "fan"}),
    "api/v1/nodes/<name>/drain/": R(None, post=API_OPERATOR, body={"reason": "fan"}),
    "api/v1/nodes/<name>/resume/": R(None, post=API_OPERATOR),
    "api/v1/quotas/": R(
        API_ALL, post=(401, 403, 403, 403, 201, 403), body={"team": "vision", "gpu_model": "h100", "guarantee": 0, "limit": 4}
    ),
    # Leads adjust their own team's limit within the operator's bounds; researchers may not.
    "api/v1/quotas/<pk>/": R(API_MEMBERS, patch=(401, 403, 404, 200, 200, 404), body={"limit": 10}),
    # A token cannot create tokens (revoking a leaked one must end its access); a session can (test_access_api).
    "api/v1/tokens/": R(API_ALL, post=(401, 403, 403, 403, 403, 403), body={"name": "matrix"}),
    "api/v1/tokens/<pk>/": R(None, delete=(401, 204, 404, 404, 404, 404)),  # a token is its owner's alone
    # Billing API
    "api/v1/billing/summary/": R(API_BILLING),
    "api/v1/billing/budgets/": R(
        API_BILLING,
        post=(401, 403, 403, 403, 403, 201),
        body={"team": "vision", "amount": "5", "thresholds": [{"percent": "100", "action": "notify"}]},
    ),
    "api/v1/billing/budgets/<pk>/": R(API_BILLING),
    "api/v1/billing/invoices/": R(API_BILLING),
    "api/v1/billing/invoices/generate/": R(None, post=API_FINANCE_WRITE, body={"team": "vision", "month": "2025-03"}),
    "api/v1/billing/invoices/<pk>/": R(API_BILLING),
    # A draft invoice cannot be corrected (400, naming why); that it gets that far is finance's alone.
    "api/v1/billing/invoices/<pk>/correct/": R(
        None, post=(401, 403, 403, 403, 403, 400), body={"month": "2025-04", "amount": "-1.00", "reason": "matrix"}
    ),
    "api/v1/billing/invoices/<pk>/csv/": R(API_BILLING),
    "api/v1/billing/invoices/<pk>/pdf/": R(API_BILLING),
    "api/v1/billing/invoices/<pk>/finalise/": R(None, post=API_FINANCE_WRITE),
    "api/v1/billing/rate-cards/": R(
        API_BILLING,
        post=(401, 403, 403, 403, 403, 201),
        body={"gpu_model": "v100", "pool_kind": "onprem", "per_gpu_hour": "1", "valid_from": "2025-01-01"},
    ),
    "api/v1/billing/rate-cards/<pk>/": R(API_BILLING),
    "api/v1/billing/storage-rates/": R(
        API_BILLING, post=(401, 403, 403, 403, 403, 201), body={"per_gb_month": "0.02", "valid_from": "2031-01-01"}
    ),
    "api/v1/billing/storage-rates/<pk>/": R(API_BILLING),
    "api/v1/billing/rate-cards/change/": R(
        None,
        post=(401, 403, 403, 403, 403, 201),
        body={"gpu_model": "a100", "pool_kind": "onprem", "per_gpu_hour": "2.50", "from_day": "2030-01-01"},
    ),
    # Bursting API
    "api/v1/bursting/bursts/": R(API_OPERATOR),
    "api/v1/bursting/bursts/<pk>/": R(API_OPERATOR),
    "api/v1/bursting/bursts/<pk>/approve/": R(None, post=API_OPERATOR),
    "api/v1/bursting/bursts/<pk>/reject/": R(None, post=API_OPERATOR, body={"reason": "not now"}),
    "api/v1/bursting/instance-types/": R(API_OPERATOR),
    "api/v1/bursting/instance-types/<name>/": R(API_OPERATOR),
    # Slurm's ResumeProgram/SuspendProgram with an operator's token; on the simulator the operator's call is refused (400)
    "api/v1/bursting/slurm/resume/": R(None, post=(401, 403, 403, 403, 400, 403), body={"nodes": ["burst-a10g-1"]}),
    "api/v1/bursting/slurm/suspend/": R(None, post=(401, 403, 403, 403, 400, 403), body={"nodes": ["burst-a10g-1"]}),
}

# allauth's pages: sign-in is public, the rest is allauth's own flow; open signup is off.
ANYONE: Answers = (200,) * 6
SIGNED_IN: Answers = (LOGIN, 200, 200, 200, 200, 200)
FLOW: Answers = (LOGIN, 302, 302, 302, 302, 302)  # a step of a flow none of them started: sent back
ACCOUNTS: dict[str, tuple[str, Row]] = {
    "accounts/login/": ("/accounts/login/", R((200, 302, 302, 302, 302, 302), post=(200, 302, 302, 302, 302, 302))),
    "accounts/logout/": ("/accounts/logout/", R(SIGNED_IN, post=(LOGIN,) * 6)),
    "accounts/inactive/": ("/accounts/inactive/", R(ANYONE)),
    # Signup is closed (NoSignupAccountAdapter): the page says so, and nobody is created.
    "accounts/signup/": ("/accounts/signup/", R((200, 302, 302, 302, 302, 302), post=(200, 302, 302, 302, 302, 302))),
    "accounts/reauthenticate/": ("/accounts/reauthenticate/", R(SIGNED_IN, post=SIGNED_IN)),
    "accounts/reauthenticate/code/": ("/accounts/reauthenticate/code/", R(FLOW, post=FLOW)),
    "accounts/reauthenticate/code/confirm/": ("/accounts/reauthenticate/code/confirm/", R(FLOW, post=FLOW)),
    "accounts/email/": ("/accounts/email/", R(SIGNED_IN, post=FLOW)),
    "accounts/confirm-email/": ("/accounts/confirm-email/", R(ANYONE)),
    "accounts/confirm-email/<key>/": ("/accounts/confirm-email/bogus/", R(ANYONE, post=(404,) * 6)),
    "accounts/password/change/": ("/accounts/password/change/", R(SIGNED_IN, post=SIGNED_IN)),
    "accounts/password/set/": ("/accounts/password/set/", R(FLOW, post=FLOW)),
    "accounts/password/reset/": ("/accounts/password/reset/", R(ANYONE, post=ANYONE)),
    "accounts/password/reset/done/": ("/accounts/password/reset/done/", R(ANYONE)),
    "accounts/password/reset/key/<uidb36>-<key>/": (
        "/accounts/password/reset/key/0-bogus/",
        R(ANYONE, post=ANYONE),
    ),  # "bad token" page
    "accounts/password/reset/key/done/": ("/accounts/password/reset/key/done/", R(ANYONE)),
    "accounts/login/code/confirm/": ("/accounts/login/code/confirm/", R(FLOW, post=FLOW)),
    "accounts/3rdparty/": ("/accounts/3rdparty/", R(SIGNED_IN, post=SIGNED_IN)),
    "accounts/3rdparty/login/cancelled/": ("/accounts/3rdparty/login/cancelled/", R(ANYONE)),
    "accounts/3rdparty/login/error/": ("/accounts/3rdparty/login/error/", R((401,) * 6)),
    "accounts/3rdparty/signup/": ("/accounts/3rdparty/signup/", R((LOGIN,) * 6, post=(LOGIN,) * 6)),
    "accounts/social/login/cancelled/": ("/accounts/social/login/cancelled/", R((301,) * 6, post=(301,) * 6)),
    "accounts/social/login/error/": ("/accounts/social/login/error/", R((301,) * 6, post=(301,) * 6)),
    "accounts/social/signup/": ("/accounts/social/signup/", R((301,) * 6, post=(301,) * 6)),
    "accounts/social/connections/": ("/accounts/social/connections/", R((301,) * 6, post=(301,) * 6)),
    "accounts/oidc/<provider_id>/login/": (
        "/accounts/oidc/sso/login/",
        R((404,) * 6, post=(404,) * 6),
    ),  # no OIDC provider configured
    "accounts/oidc/<provider_id>/login/callback/": ("/accounts/oidc/sso/login/callback/", R((404,) * 6, post=(404,) * 6)),
}


# The admin: staff only. olivia is staff without model permissions, so she reaches the index but no model.
def staff(olivia: str | int) -> Answers:
    return (ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, olivia, ADMIN_LOGIN)


NO_MODEL_PERMISSION = staff(403)
ADMIN_KINDS: dict[str, Row] = {
    "index": R(staff(200), post=staff(200)),
    "login": R((200, 200, 200, 200, 302, 200), post=ANYONE),  # a signed-in non-staff user is asked to sign in as staff
    "logout": R((302, 302, 302, 302, 405, 302), post=(302, 302, 302, 302, 200, 302)),
    "password_change": R(staff(200), post=staff(200)),
    "password_change_done": R(staff(200), post=staff(405)),
    "autocomplete": R(NO_MODEL_PERMISSION, post=staff(405)),
    "jsi18n": R(staff(200), post=staff(405)),
    "shortcut": R(staff(404), post=staff(404)),  # "view on site": teams have no page of their own
    "app": R(staff(404), post=staff(404)),  # an app with no permitted model
    "catch_all": R(staff(404), post=staff(404)),
    "changelist": R(NO_MODEL_PERMISSION, post=NO_MODEL_PERMISSION),
    "add": R(NO_MODEL_PERMISSION, post=NO_MODEL_PERMISSION),
    "object": R(staff(302), post=staff(302)),  # the bare object URL redirects to change/
    "change": R(NO_MODEL_PERMISSION, post=NO_MODEL_PERMISSION),
    "history": R(NO_MODEL_PERMISSION, post=NO_MODEL_PERMISSION),
    "history_missing": R(staff(302), post=staff(302)),  # no such object: back to the index, nothing said
    "delete": R(NO_MODEL_PERMISSION, post=NO_MODEL_PERMISSION),
    "password": R(NO_MODEL_PERMISSION, post=NO_MODEL_PERMISSION),
}
ADMIN_FIXED = {
    "admin/": "index", "admin/login/": "login", "admin/logout/": "logout", "admin/password_change/": "password_change",
    "admin/password_change/done/": "password_change_done", "admin/autocomplete/": "autocomplete", "admin/jsi18n/": "jsi18n",
    "admin/r/<path:content_type_id>/<path:object_id>/": "shortcut", "admin/<app_label>/": "app", "admin/<url>": "catch_all",
}  # fmt: skip


def admin_kind(route: str) -> str:
    if route in ADMIN_FIXED:
        return ADMIN_FIXED[route]
    tail = route.split("/", 3)[3]  # admin/<app>/<model>/<tail>
    kinds = {"": "changelist", "add/": "add", "<path:object_id>/": "object", "<id>/password/": "password"}
    kind = kinds.get(tail) or tail.removeprefix("<path:object_id>/").rstrip("/")
    _, app_label, model_name, _ = route.split("/", 3)
    missing = not apps.get_model(app_label, model_name)._default_manager.exists()
    return "history_missing" if kind == "history" and missing else kind


def admin_url(route: str, world: dict[str, Any]) -> str:
    if route == "admin/r/<path:content_type_id>/<path:object_id>/":
        return f"/admin/r/{ContentType.objects.get_for_model(Team).pk}/{world['team']}/"
    if route in ("admin/<app_label>/", "admin/<url>"):
        return "/admin/portal/" if route == "admin/<app_label>/" else "/admin/no-such-page/"
    if route in ADMIN_FIXED:
        return "/" + route
    _, app_label, model_name, _ = route.split("/", 3)
    obj = apps.get_model(app_label, model_name)._default_manager.order_by("pk").first()
    pk = str(obj.pk) if obj is not None else "0"
    return "/" + route.replace("<path:object_id>", pk).replace("<id>", str(world["user"]))


# Discovery


def mounted_routes() -> set[str]:
    """Routes under the prefixes that tests/security/test_url_coverage.py leaves to other tables."""

    def every(patterns: list[Any], prefix: str = "") -> Iterator[str]:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                yield from every(pattern.url_patterns, route)
            else:
                yield normalized(route)

    return {route for route in every(get_resolver().url_patterns) if route.startswith(MOUNTED)}


def all_routes() -> set[str]:
    return project_routes() | mounted_routes()


def admin_routes() -> list[str]:
    return sorted(r for r in mounted_routes() if r.startswith("admin/"))


def tabled_routes() -> set[str]:
    return set(TABLE) | set(ACCOUNTS) | set(admin_routes())


def test_every_route_has_a_row() -> None:
    assert all_routes() - tabled_routes() == set()
    assert set(SAMPLES) == set(TABLE)
    assert websocket_routes() == set(WEBSOCKETS)


def test_no_row_is_left_for_a_route_that_is_gone() -> None:
    assert (set(TABLE) | set(ACCOUNTS)) - all_routes() == set()


def test_the_discovery_reaches_every_mounted_app() -> None:
    prefixes = {route.split("/")[0] + "/" for route in all_routes() if "/" in route}
    assert {"billing/", "console/", "admin/", "accounts/", "api/", "jobs/", "tokens/", "planning/"} <= prefixes
    assert {"api/v1/billing/invoices/<pk>/finalise/", "api/v1/bursting/bursts/<pk>/approve/"} <= all_routes()


def test_every_admin_route_has_a_kind(db: None) -> None:
    assert {admin_kind(route) for route in admin_routes()} <= set(ADMIN_KINDS)


@pytest.mark.parametrize("route", sorted(TABLE), ids=lambda r: r or "dashboard")
def test_each_sample_url_resolves_to_its_route(world: dict[str, Any], route: str) -> None:
    url = SAMPLES[route].format(**world).split("?")[0]
    assert normalized(resolve(url).route) == route


# The calls


def outcome(response: Any) -> str | int:
    location = response.get("Location", "")
    if response.status_code == 302 and location.startswith("/admin/login/"):
        return ADMIN_LOGIN
    if response.status_code == 302 and location.startswith("/accounts/login/"):
        return LOGIN
    return int(response.status_code)


def fingerprint() -> str:
    """A digest of everything a write could change: jobs, tokens, quotas, nodes, invoices, bursts, users."""
    parts = [
        list(Job.objects.order_by("pk").values_list("pk", "state", "name")),
        JobEvent.objects.count(),
        list(ApiToken.objects.order_by("pk").values_list("pk", "revoked_at")),
        list(TeamQuota.objects.order_by("pk").values_list("pk", "guarantee", "limit", "lendable")),
        list(Node.objects.order_by("pk").values_list("pk", "state")),
        NodeEvent.objects.count(),
        list(Invoice.objects.order_by("pk").values_list("pk", "state", "total")),
        list(Budget.objects.order_by("pk").values_list("pk", "amount")),
        RateCard.objects.count(),
        StorageRateCard.objects.count(),
        list(BurstProposal.objects.order_by("pk").values_list("pk", "state")),
        WhatIfRun.objects.count(),
        list(User.objects.order_by("pk").values_list("pk", "is_active", "password")),
        Membership.objects.count(),
    ]
    return hashlib.sha256(repr(parts).encode()).hexdigest()


TEAMS = {"alice": "vision", "bob": "vision", "carol": "render"}


def send(
    callers: dict[str, tuple[Client, APIClient]], role: str, method: str, url: str, body: dict[str, Any] | None
) -> str | int:
    browser, client = callers[role]
    data = {k: v.format(team=TEAMS.get(role, "")) if isinstance(v, str) else v for k, v in (body or {}).items()}
    if url.startswith("/api/v1/"):
        return outcome(getattr(client, method)(url, data, format="json"))
    return outcome(getattr(browser, method)(url, data))


def call(
    callers: dict[str, tuple[Client, APIClient]], role: str, method: str, url: str, body: dict[str, Any] | None
) -> tuple[str | int, bool]:
    """The answer to one call, and whether it changed any data; the call's effects are rolled back."""
    with transaction.atomic():
        before = fingerprint()
        got = send(callers, role, method, url, body)
        changed = fingerprint() != before
        transaction.set_rollback(True)
    return got, changed


def refused_by_all(
    callers: dict[str, tuple[Client, APIClient]], method: str, url: str, row: Row, expected: Answers | None
) -> list[str]:
    """Calls every role expects to be refused run together in one savepoint: one fingerprint before, one after."""
    failures = []
    with transaction.atomic():
        before = fingerprint()
        for role, want in zip(ROLES, expected or (None,) * 6, strict=True):
            got = send(callers, role, method, url, row.body)
            read = (row.read or (405,) * 6)[ROLES.index(role)]
            if want is None and got not in REFUSED and got != read:
                failures.append(f"{method.upper()} {url} as {role}: {got}; the route takes no {method}")
            elif want is not None and got != want:
                failures.append(f"{method.upper()} {url} as {role}: {got}, the table says {want}")
        if fingerprint() != before:
            failures.append(f"{method.upper()} {url}: refused for every role, yet data changed")
        transaction.set_rollback(True)
    return failures


def check_row(
    callers: dict[str, tuple[Client, APIClient]], url: str, row: Row, methods: tuple[str, ...] = ("get", *WRITES)
) -> None:
    served = {"get": row.read, **row.writes}
    failures = []
    for method in methods:
        expected = served.get(method)
        if method == "get" and expected is not None:
            with transaction.atomic():
                got_all = tuple(send(callers, role, "get", url, None) for role in ROLES)
                transaction.set_rollback(True)
            failures += [
                f"GET {url} as {r}: {g}, the table says {w}" for r, g, w in zip(ROLES, got_all, expected, strict=True) if g != w
            ]
        elif expected is None or all(want in REFUSED for want in expected):
            failures += refused_by_all(callers, method, url, row, expected)
        else:
            for role, want in zip(ROLES, expected, strict=True):
                got, changed = call(callers, role, method, url, row.body)
                if got != want:
                    failures.append(f"{method.upper()} {url} as {role}: {got}, the table says {want}")
                elif changed and want in REFUSED:
                    failures.append(f"{method.upper()} {url} as {role}: refused with {got} but changed data")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("route", sorted(TABLE), ids=lambda r: r or "dashboard")
def test_each_role_gets_what_the_table_says(
    callers: dict[str, tuple[Client, APIClient]], world: dict[str, Any], route: str
) -> None:
    check_row(callers, SAMPLES[route].format(**world), TABLE[route])


@pytest.mark.parametrize("route", sorted(ACCOUNTS))
def test_each_role_gets_what_the_table_says_on_allauth(
    callers: dict[str, tuple[Client, APIClient]], world: dict[str, Any], route: str
) -> None:
    url, row = ACCOUNTS[route]
    check_row(callers, url, row)


def test_each_role_gets_what_its_kind_says_on_every_admin_route(
    callers: dict[str, tuple[Client, APIClient]], world: dict[str, Any], settings: Settings
) -> None:
    # Every role posts an empty form to /admin/login/ from one address; the sign-in limit has its own tests.
    settings.ADMIN_LOGIN_FAILURE_LIMIT = 10_000
    failures = []
    for route in sorted(admin_routes(), key=lambda r: r == "admin/logout/"):  # signing out last; GET and POST only
        try:
            check_row(callers, admin_url(route, world), ADMIN_KINDS[admin_kind(route)], ("get", "post"))
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)


def test_revoking_someone_elses_token_leaves_it_working(
    callers: dict[str, tuple[Client, APIClient]], world: dict[str, Any]
) -> None:
    for role in ("carol", "bob", "olivia", "fiona"):
        callers[role][0].post(f"/tokens/{world['token']}/revoke/")
    assert ApiToken.objects.get(pk=world["token"]).revoked_at is None
    callers["alice"][0].post(f"/tokens/{world['token']}/revoke/")
    assert ApiToken.objects.get(pk=world["token"]).revoked_at is not None


def test_a_refused_write_is_seen_to_change_nothing_and_an_allowed_one_to_change_something(
    callers: dict[str, tuple[Client, APIClient]], world: dict[str, Any]
) -> None:
    """The fingerprint notices writes, so 'changed nothing' above means something."""
    assert call(callers, "olivia", "post", f"/api/v1/nodes/{world['node']}/cordon/", {"reason": "fan"}) == (200, True)
    assert call(callers, "carol", "post", f"/api/v1/nodes/{world['node']}/cordon/", {"reason": "fan"}) == (403, False)


# Websockets: every role on both live feeds

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
ACCEPTED = "accepted"
WEBSOCKETS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    # every signed-in user may watch the grid (each sees only their own teams' queues)
    "ws/grid/": ("/ws/grid/", (CLOSE_UNAUTHENTICATED, ACCEPTED, ACCEPTED, ACCEPTED, ACCEPTED, ACCEPTED)),
    "ws/jobs/<int:job_id>/": (
        "/ws/jobs/{job}/",
        (CLOSE_UNAUTHENTICATED, ACCEPTED, CLOSE_FORBIDDEN, ACCEPTED, ACCEPTED, CLOSE_FORBIDDEN),
    ),
    # A notebook's sockets (a kernel's; code-server's, also at the proxy's root): its owner and the operator get
    # "try again later" while it starts; others are refused.
    "notebooks/<int:notebook_id>/proxy/": (
        "/notebooks/{notebook}/proxy/",
        (CLOSE_UNAUTHENTICATED, 1013, CLOSE_FORBIDDEN, CLOSE_FORBIDDEN, 1013, CLOSE_FORBIDDEN),
    ),
    "notebooks/<int:notebook_id>/proxy/<path:rest>": (
        "/notebooks/{notebook}/proxy/api/kernels/k1/channels",
        (CLOSE_UNAUTHENTICATED, 1013, CLOSE_FORBIDDEN, CLOSE_FORBIDDEN, 1013, CLOSE_FORBIDDEN),
    ),
}


@sync_to_async
def _cookies(request: Any, world_job: int) -> dict[str, bytes]:
    out = {}
    for role in ROLES[1:]:
        client = Client()
        client.force_login(request.getfixturevalue(role))
        out[role] = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()
    return out


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("route", sorted(WEBSOCKETS))
async def test_each_role_gets_what_the_table_says_on_the_websockets(request: pytest.FixtureRequest, route: str) -> None:
    world = await sync_to_async(request.getfixturevalue)("world")
    cookies = await _cookies(request, world["job"])
    template, expected = WEBSOCKETS[route]
    got = []
    try:
        for role in ROLES:
            headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
            if role in cookies:
                headers.append((b"cookie", cookies[role]))
            communicator = WebsocketCommunicator(application, template.format(**world), headers=headers)
            connected, code = await communicator.connect(timeout=5)
            got.append(ACCEPTED if connected else code)
            await communicator.disconnect()
    finally:
        await sync_to_async(connections.close_all)()
    assert tuple(got) == expected
