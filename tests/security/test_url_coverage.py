"""Every route of the portal is in the access table below, and behaves as the table says.

A route added to the URLconf, the API router or the websocket routing without a row here fails
`test_every_route_is_in_the_access_table`. Each row is then checked for three callers: an anonymous
visitor, the outsider carol (team render) on vision's objects, and the rightful user.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, include, path, re_path, resolve

from cluster.models import Node
from grid.asgi import application
from grid.routing import websocket_urlpatterns
from grid.urls import router
from jobs.models import Job, WhatIfRun
from notebooks import services as notebook_services
from portal.models import ApiToken, User
from quotas.models import TeamQuota
from sweeps import services as sweep_services

# Billing's routes have their own table of who gets what (finance, the team's lead, researchers,
# outsiders, anonymous) in tests/billing/test_access.py, with invoices to point at.
# The operator console's and bursting API's routes have theirs in tests/bursting/test_access.py.
EXCLUDED_PREFIXES = ("admin/", "accounts/", "static/", "billing/", "api/v1/billing/", "console/", "api/v1/bursting/")
API = "api/v1/"

LOGIN = "login"  # 302 to /accounts/login/?next=...
PUBLIC = "public"  # served to anyone (200, or 503 from /healthz while something is down)


@dataclass(frozen=True)
class Route:
    """One route: a sample URL, the methods it serves, and what each kind of caller gets."""

    url: str  # placeholders: {sweep} alice's sweep, {trial} its first trial, {job} alice's job, {token} alice's token, {node}, {pool}, {quota} vision's a100 quota, {run} a what-if run, {notebook} alice's notebook
    anonymous: str | int
    outsider: str | int  # carol, on vision's objects
    rightful: tuple[str, str | int]  # persona, status
    methods: tuple[str, ...] = ("get",)
    body: dict[str, str] | None = None
    known_bug: str = ""


ROUTES: dict[str, Route] = {
    # Pages
    "": Route("/", LOGIN, 200, ("alice", 200)),
    "healthz": Route("/healthz", PUBLIC, PUBLIC, ("olivia", PUBLIC)),
    "livez": Route("/livez", 200, 200, ("alice", 200)),
    "metrics": Route("/metrics", 403, 403, ("olivia", 200)),
    "tokens/": Route("/tokens/", LOGIN, 200, ("alice", 200), ("get", "post")),
    "tokens/<int:token_id>/revoke/": Route("/tokens/{token}/revoke/", LOGIN, 302, ("alice", 302), ("post",)),
    "jobs/": Route("/jobs/", LOGIN, 200, ("alice", 200)),
    "planning/": Route("/planning/", LOGIN, 404, ("olivia", 200), ("get", "post")),
    "planning/<int:run_id>/": Route("/planning/{run}/", LOGIN, 404, ("olivia", 200)),
    "planning/<int:run_id>/status": Route("/planning/{run}/status", LOGIN, 404, ("olivia", 200)),
    "teams/": Route("/teams/", LOGIN, 200, ("alice", 200)),
    "teams/<slug:slug>/": Route("/teams/vision/", LOGIN, 404, ("bob", 200)),
    "jobs/new/": Route("/jobs/new/", LOGIN, 200, ("alice", 200)),
    "jobs/new/<slug:slug>/": Route("/jobs/new/custom/", LOGIN, 200, ("alice", 200), ("get", "post")),
    "jobs/<int:job_id>/": Route("/jobs/{job}/", LOGIN, 404, ("bob", 200)),
    "jobs/<int:job_id>/cancel/": Route("/jobs/{job}/cancel/", LOGIN, 404, ("bob", 302), ("post",)),
    # Artifacts: the job's (or team's) own rule first, so an outsider learns nothing; no store is configured
    # here, so the rightful user's download finds no file and an upload request stops at its missing size.
    "artifacts/jobs/<int:job_id>/": Route("/artifacts/jobs/{job}/", LOGIN, 404, ("bob", 200)),
    "artifacts/jobs/<int:job_id>/files/<path:path>": Route(
        "/artifacts/jobs/{job}/files/output/model.pt", LOGIN, 404, ("bob", 404)
    ),
    "artifacts/teams/<slug:slug>/": Route("/artifacts/teams/vision/", LOGIN, 404, ("bob", 200), ("get", "post")),
    # Sweeps: the team's rule, as for jobs; the report endpoint takes a trial's token only, never a session.
    "sweeps/": Route("/sweeps/", LOGIN, 200, ("alice", 200)),
    "sweeps/new/": Route("/sweeps/new/", LOGIN, 200, ("alice", 200), ("get", "post")),
    "sweeps/<int:sweep_id>/": Route("/sweeps/{sweep}/", LOGIN, 404, ("bob", 200)),
    "sweeps/<int:sweep_id>/data": Route("/sweeps/{sweep}/data", LOGIN, 404, ("bob", 200)),
    "sweeps/<int:sweep_id>/cancel/": Route("/sweeps/{sweep}/cancel/", LOGIN, 404, ("bob", 302), ("post",)),
    "sweeps/<int:sweep_id>/best-job/": Route("/sweeps/{sweep}/best-job/", LOGIN, 404, ("bob", 302), ("post",)),
    "sweeps/<int:sweep_id>/katib.yaml": Route("/sweeps/{sweep}/katib.yaml", LOGIN, 404, ("bob", 200)),
    # Notebooks: one person's (the owner, and operators); the proxy answers them 503 while the server is starting.
    "notebooks/": Route("/notebooks/", LOGIN, 200, ("alice", 200)),
    "notebooks/new/": Route("/notebooks/new/", LOGIN, 200, ("alice", 200), ("get", "post")),
    "notebooks/<int:notebook_id>/": Route("/notebooks/{notebook}/", LOGIN, 404, ("alice", 200)),
    "notebooks/<int:notebook_id>/stop/": Route("/notebooks/{notebook}/stop/", LOGIN, 404, ("alice", 302), ("post",)),
    "notebooks/<int:notebook_id>/proxy/": Route("/notebooks/{notebook}/proxy/", LOGIN, 404, ("alice", 503), ("get", "post")),
    "notebooks/<int:notebook_id>/proxy/<path:path>": Route(
        "/notebooks/{notebook}/proxy/api/status", LOGIN, 404, ("alice", 503), ("get", "post")
    ),
    "sim/metrics": Route("/sim/metrics", 403, 403, ("olivia", 200)),
    "sim/nodes/<str:node>/metrics": Route("/sim/nodes/{node}/metrics", 403, 403, ("olivia", 200)),
    # API documentation
    "api/schema/": Route("/api/schema/", 401, 200, ("alice", 200)),
    "api/docs/": Route("/api/docs/", LOGIN, 200, ("alice", 200)),
    # API
    "api/v1/": Route("/api/v1/", 401, 200, ("alice", 200)),
    "api/v1/me/": Route("/api/v1/me/", 401, 200, ("alice", 200)),
    "api/v1/jobs/": Route("/api/v1/jobs/", 401, 200, ("alice", 200), ("get", "post")),
    "api/v1/jobs/<pk>/": Route("/api/v1/jobs/{job}/", 401, 404, ("bob", 200)),
    "api/v1/jobs/<pk>/cancel/": Route("/api/v1/jobs/{job}/cancel/", 401, 404, ("bob", 200), ("post",)),
    "api/v1/jobs/<pk>/events/": Route("/api/v1/jobs/{job}/events/", 401, 404, ("bob", 200)),
    "api/v1/jobs/<pk>/logs/": Route("/api/v1/jobs/{job}/logs/", 401, 404, ("bob", 200)),
    "api/v1/artifacts/jobs/<int:job_id>/": Route("/api/v1/artifacts/jobs/{job}/", 401, 404, ("bob", 200)),
    "api/v1/artifacts/jobs/<int:job_id>/uploads/": Route(
        "/api/v1/artifacts/jobs/{job}/uploads/", 401, 404, ("alice", 400), ("post",), {"path": "output/model.pt"}
    ),
    "api/v1/artifacts/teams/<slug:slug>/": Route("/api/v1/artifacts/teams/vision/", 401, 404, ("bob", 200), ("get", "put")),
    "api/v1/sweeps/": Route("/api/v1/sweeps/", 401, 200, ("alice", 200), ("get", "post")),
    "api/v1/sweeps/<int:sweep_id>/": Route("/api/v1/sweeps/{sweep}/", 401, 404, ("bob", 200)),
    "api/v1/sweeps/<int:sweep_id>/cancel/": Route("/api/v1/sweeps/{sweep}/cancel/", 401, 404, ("bob", 200), ("post",)),
    "api/v1/sweeps/trials/<int:trial_id>/report": Route(
        "/api/v1/sweeps/trials/{trial}/report", 401, 401, ("alice", 401), ("post",), {"step": "1", "value": "0.5"}
    ),
    "api/v1/notebooks/": Route("/api/v1/notebooks/", 401, 200, ("alice", 200), ("get", "post")),
    "api/v1/notebooks/<int:notebook_id>/": Route("/api/v1/notebooks/{notebook}/", 401, 404, ("alice", 200)),
    "api/v1/notebooks/<int:notebook_id>/stop/": Route("/api/v1/notebooks/{notebook}/stop/", 401, 404, ("alice", 200), ("post",)),
    "api/v1/templates/": Route("/api/v1/templates/", 401, 200, ("alice", 200)),
    "api/v1/templates/<slug>/": Route("/api/v1/templates/custom/", 401, 200, ("alice", 200)),
    "api/v1/teams/": Route("/api/v1/teams/", 401, 200, ("alice", 200)),
    "api/v1/teams/<slug>/": Route("/api/v1/teams/vision/", 401, 404, ("alice", 200)),
    "api/v1/pools/": Route("/api/v1/pools/", 401, 200, ("alice", 200)),
    "api/v1/pools/<name>/": Route("/api/v1/pools/{pool}/", 401, 200, ("alice", 200)),
    "api/v1/nodes/": Route("/api/v1/nodes/", 401, 200, ("alice", 200)),
    "api/v1/nodes/<name>/": Route("/api/v1/nodes/{node}/", 401, 200, ("alice", 200)),
    "api/v1/nodes/<name>/events/": Route("/api/v1/nodes/{node}/events/", 401, 200, ("alice", 200)),
    "api/v1/nodes/<name>/cordon/": Route("/api/v1/nodes/{node}/cordon/", 401, 403, ("olivia", 200), ("post",), {"reason": "fan"}),
    "api/v1/nodes/<name>/drain/": Route("/api/v1/nodes/{node}/drain/", 401, 403, ("olivia", 200), ("post",), {"reason": "fan"}),
    "api/v1/nodes/<name>/resume/": Route("/api/v1/nodes/{node}/resume/", 401, 403, ("olivia", 200), ("post",)),
    "api/v1/quotas/": Route("/api/v1/quotas/", 401, 200, ("alice", 200)),
    "api/v1/quotas/<pk>/": Route("/api/v1/quotas/{quota}/", 401, 404, ("alice", 200)),
    "api/v1/tokens/": Route("/api/v1/tokens/", 401, 200, ("alice", 200), ("get", "post")),
    "api/v1/tokens/<pk>/": Route("/api/v1/tokens/{token}/", 401, 404, ("alice", 204), ("delete",)),
}

SWEEP_SAMPLE = {
    "name": "lr-search", "metric": "loss", "max_trials": 2, "max_parallel": 1, "sampler": "random",
    "base": {"name": "train", "command": ["python", "train.py", "--lr", "{lr}"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": 600},
    "space": {"lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}},
}  # fmt: skip

CLOSE_UNAUTHENTICATED = 4401
WEBSOCKETS: dict[str, str] = {  # route -> sample path; anonymous sockets are closed with 4401
    "ws/grid/": "/ws/grid/",
    "ws/jobs/<int:job_id>/": "/ws/jobs/1/",
    "notebooks/<int:notebook_id>/proxy/": "/notebooks/1/proxy/",
    "notebooks/<int:notebook_id>/proxy/<path:rest>": "/notebooks/1/proxy/api/kernels/k1/channels",
}

FORMAT_SUFFIX = re.compile(r"\\\.\(\?P<format>[^)]*\)/\?")
NAMED_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def normalized(route: str) -> str:
    """The router's regexes written like path() routes; `.json` variants fold into their route."""
    route = route.replace("<drf_format_suffix:format>", "")
    route = FORMAT_SUFFIX.sub("/", route)
    route = NAMED_GROUP.sub(r"<\1>", route)
    return route.replace("^", "").replace("$", "")


def walk(patterns: list[URLPattern | URLResolver], prefix: str = "") -> Iterator[str]:
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if normalized(route).startswith(EXCLUDED_PREFIXES):
            continue
        if isinstance(pattern, URLResolver):
            yield from walk(pattern.url_patterns, route)
        else:
            yield route


def project_routes() -> set[str]:
    return {normalized(route) for route in walk(get_resolver().url_patterns)}


def routes_with_a_format_suffix() -> set[str]:
    return {normalized(route) for route in walk(get_resolver().url_patterns) if "format" in route}


def websocket_routes() -> set[str]:
    return {str(p.pattern) for p in websocket_urlpatterns}


def param(route: str, *extra: object) -> object:
    row = ROUTES[route]
    marks = [pytest.mark.xfail(strict=True, reason=row.known_bug)] if row.known_bug else []
    return pytest.param(route, *extra, marks=marks, id=route or "dashboard")


def call(client: Client, route: Route, method: str, values: Mapping[str, object]) -> Any:
    url = route.url.format(**values)
    if url.startswith("/api/v1/"):
        return getattr(client, method)(url, route.body or {}, content_type="application/json")
    return getattr(client, method)(url, route.body or {})


def assert_outcome(response: HttpResponse, expected: str | int) -> None:
    if expected == LOGIN:
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")
    elif expected == PUBLIC:
        assert response.status_code in (200, 503)
    else:
        assert response.status_code == expected, response.content[:300]


@pytest.fixture
def values(alice: User, bob: User, carol: User, olivia: User, submit: Callable[..., Job]) -> dict[str, int | str]:
    node = Node.objects.select_related("pool").order_by("name").first()
    assert node is not None
    token, _ = ApiToken.issue(alice, "alice-laptop")
    quota = TeamQuota.objects.get(team__slug="vision", gpu_model="a100")
    sweep = sweep_services.create_sweep(alice, SWEEP_SAMPLE)
    return {
        "job": submit(alice, name="vision-alice-resnet").pk,
        "token": token.pk,
        "node": node.name,
        "pool": node.pool.name,
        "quota": quota.pk,
        "run": WhatIfRun.objects.create(requested_by=olivia, gpu_model="a100", days=1).pk,
        "sweep": sweep.pk,
        "trial": sweep.trials.get(number=0).pk,
        "notebook": notebook_services.start(alice, {"team": "vision", "gpu_model": "a100"}).pk,
    }


# The table is complete and every row points at the route it names


def test_every_route_is_in_the_access_table() -> None:
    assert project_routes() - set(ROUTES) == set()
    assert websocket_routes() - set(WEBSOCKETS) == set()


def test_the_access_table_has_no_rows_for_routes_that_are_gone() -> None:
    assert set(ROUTES) - project_routes() == set()
    assert set(WEBSOCKETS) - websocket_routes() == set()


def test_a_new_route_without_a_row_would_be_caught() -> None:
    def view(request: HttpRequest) -> HttpResponse:
        raise AssertionError("never called")

    added: list[URLPattern | URLResolver] = [
        path("jobs/<int:job_id>/retry/", view),
        path("api/v1/", include([re_path(r"^invoices\.(?P<format>[a-z0-9]+)/?$", view)])),
    ]
    assert {normalized(route) for route in walk(added)} - set(ROUTES) == {"jobs/<int:job_id>/retry/", "api/v1/invoices/"}


def test_every_api_router_registration_is_in_the_access_table() -> None:
    registered = {normalized(API + str(url.pattern)) for url in router.urls}
    assert {r for r in registered if not r.startswith(EXCLUDED_PREFIXES)} - set(ROUTES) == set()
    assert {prefix for prefix, _, _ in router.registry} == {
        "jobs", "templates", "teams", "pools", "nodes", "tokens", "quotas",
        "billing/invoices", "billing/rate-cards", "billing/storage-rates", "billing/budgets", "bursting/bursts",
        "bursting/instance-types",
    }  # fmt: skip


@pytest.mark.parametrize("route", list(ROUTES), ids=lambda r: r or "dashboard")
def test_each_sample_url_resolves_to_the_route_of_its_row(route: str) -> None:
    sample = ROUTES[route].url.format(job=1, token=1, node="node-1", pool="pool-1", quota=1, run=1, sweep=1, trial=1, notebook=1)
    assert normalized(resolve(sample).route) == route


def test_the_normalised_route_of_a_format_suffix_is_that_of_its_plain_route() -> None:
    assert normalized(resolve("/api/v1/jobs/7/events.json").route) == "api/v1/jobs/<pk>/events/"
    assert normalized(resolve("/api/v1/.json").route) == "api/v1/"


# What each kind of caller gets


@pytest.mark.parametrize(("route", "method"), [param(r, m) for r, row in ROUTES.items() for m in row.methods])
def test_an_anonymous_caller_gets_what_the_table_says(
    client: Client, values: dict[str, int | str], route: str, method: str
) -> None:
    assert_outcome(call(client, ROUTES[route], method, values), ROUTES[route].anonymous)


@pytest.mark.parametrize("route", [param(r) for r in ROUTES if r in routes_with_a_format_suffix()])
def test_an_anonymous_caller_gets_the_same_on_the_json_suffix(client: Client, values: dict[str, int | str], route: str) -> None:
    row = ROUTES[route]
    url = row.url.format(**values)
    url = url + ".json" if url.endswith("v1/") else url.rstrip("/") + ".json"
    assert getattr(client, row.methods[0])(url).status_code == row.anonymous


@pytest.mark.parametrize("route", list(ROUTES), ids=lambda r: r or "dashboard")
def test_the_outsider_gets_what_the_table_says_on_another_teams_objects(
    web: Callable[[User | None], Client], carol: User, values: dict[str, int | str], route: str
) -> None:
    row = ROUTES[route]
    assert_outcome(call(web(carol), row, row.methods[0], values), row.outsider)


@pytest.mark.parametrize("route", list(ROUTES), ids=lambda r: r or "dashboard")
def test_the_rightful_user_gets_what_the_table_says(
    request: pytest.FixtureRequest, web: Callable[[User | None], Client], values: dict[str, int | str], route: str
) -> None:
    row = ROUTES[route]
    persona, expected = row.rightful
    assert_outcome(call(web(request.getfixturevalue(persona)), row, row.methods[0], values), expected)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("route", list(WEBSOCKETS))
async def test_an_anonymous_websocket_is_closed_with_4401(route: str) -> None:
    communicator = WebsocketCommunicator(
        application, WEBSOCKETS[route], headers=[(b"origin", b"http://testserver"), (b"host", b"testserver")]
    )
    try:
        assert await communicator.connect(timeout=5) == (False, CLOSE_UNAUTHENTICATED)
    finally:
        await communicator.disconnect()
        await sync_to_async(connections.close_all)()
