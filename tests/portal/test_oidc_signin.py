"""Single sign-on against a real OpenID Connect provider: the npm package oidc-provider, run locally
by scripts/oidc-dev-provider/ (installed into its git-ignored node_modules on first use).

The whole authorization-code flow runs over HTTP against the live portal with a requests.Session:
the portal's sign-in button, the provider's login and consent pages, the callback, team mapping from
the `groups` claim, then sign-out through the provider's end_session_endpoint. Without Node.js or npm
the tests skip; under CI=true that is a failure.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from pytest_django import Settings
from pytest_django.live_server_helper import LiveServer

from portal.accounts import ID_TOKEN_SESSION_KEY
from portal.models import Membership, Team, TeamRole, User

PROVIDER_DIR = Path(__file__).resolve().parents[2] / "scripts" / "oidc-dev-provider"
CLIENT_ID = "grid-portal"
CLIENT_SECRET = "grid-portal-dev-secret"
IN_CI = os.environ.get("CI") == "true"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true: the OpenID Connect tests must run, but {reason}")
    pytest.skip(reason)


def install_dev_provider() -> None:
    """`npm ci` into scripts/oidc-dev-provider/node_modules once per package-lock.json (a stamp remembers)."""
    if not shutil.which("node") or not shutil.which("npm"):
        _unavailable("Node.js and npm are not installed (the dev provider is an npm package)")
    lock = (PROVIDER_DIR / "package-lock.json").read_bytes()
    stamp = PROVIDER_DIR / "node_modules" / ".installed-lock-sha256"
    digest = hashlib.sha256(lock).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"],
        cwd=PROVIDER_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        _unavailable(f"npm ci in {PROVIDER_DIR} failed: {done.stderr[-2000:]}")
    stamp.write_text(digest)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def oidc_provider(live_server: LiveServer) -> Iterator[str]:
    """The dev provider's issuer URL, with the live portal registered as its client."""
    install_dev_provider()
    port = free_port()
    env = {**os.environ, "PORT": str(port), "PORTAL_URL": str(live_server.url), "CLIENT_ID": CLIENT_ID}
    env["CLIENT_SECRET"] = CLIENT_SECRET
    process = subprocess.Popen(
        ["node", "provider.js"], cwd=PROVIDER_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    issuer = f"http://127.0.0.1:{port}"
    try:
        wait_for_discovery(issuer, process)
        yield issuer
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_discovery(issuer: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"the dev provider exited with {process.returncode}: {output[-2000:]}")
        try:
            if requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the dev provider at {issuer} did not publish its discovery document in 30 s")


@pytest.fixture
def sso(settings: Settings, oidc_provider: str) -> str:
    """The portal configured for the dev provider, as OIDC_* environment variables would configure it."""
    settings.OIDC_CLIENT_ID = CLIENT_ID
    settings.OIDC_SERVER_URL = oidc_provider
    settings.OIDC_TEAMS_CLAIM = "groups"
    settings.OIDC_TEAM_PREFIX = "grid-"
    settings.OIDC_LEAD_SUFFIX = "-lead"
    settings.OIDC_OPERATOR_GROUP = "grid-operators"
    settings.OIDC_RP_LOGOUT = True
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "SCOPE": ["openid", "profile", "email", "groups"],
            "OAUTH_PKCE_ENABLED": True,
            "APPS": [
                {
                    "provider_id": "sso",
                    "name": "Dev SSO",
                    "client_id": CLIENT_ID,
                    "secret": CLIENT_SECRET,
                    "settings": {"server_url": oidc_provider},
                }
            ],
        }
    }
    # The live server speaks plain HTTP: cookies marked Secure would never come back.
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    return oidc_provider


@pytest.fixture
def teams(transactional_db: None) -> dict[str, Team]:
    return {slug: Team.objects.create(slug=slug, name=slug.title()) for slug in ("vision", "render", "legacy")}


class FormReader(HTMLParser):
    """The first form of a page: its action and its inputs' names and values."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form" and self.action is None:
            self.action = values.get("action", "")
        elif tag == "input" and values.get("name") and values.get("type") != "submit":
            self.fields.setdefault(values["name"], values.get("value", ""))


def read_form(response: requests.Response) -> tuple[str, dict[str, str]]:
    reader = FormReader()
    reader.feed(response.text)
    assert reader.action is not None, f"no form on {response.url}: {response.text[:500]}"
    return urljoin(response.url, reader.action), reader.fields


def csrf_post(browser: requests.Session, portal: str, path: str) -> requests.Response:
    browser.get(f"{portal}/accounts/login/")
    token = browser.cookies.get("csrftoken")
    assert token, "the portal set no CSRF cookie"
    return browser.post(f"{portal}{path}", data={"csrfmiddlewaretoken": token}, headers={"Referer": portal})


def sign_in(browser: requests.Session, portal: str, issuer: str, login: str) -> tuple[requests.Response, list[str]]:
    """Press the portal's "Sign in with …" button, then sign in and consent at the provider.

    Returns the page the portal ends on and the provider's prompts on the way ("login", "consent")."""
    page = csrf_post(browser, portal, "/accounts/oidc/sso/login/")
    prompts = []
    for _ in range(4):  # the provider's interactions: login, then consent (skipped once granted)
        if not page.url.startswith(issuer):
            break
        action, fields = read_form(page)
        prompts.append(fields.get("prompt", ""))
        if fields.get("prompt") == "login":
            fields.update(login=login, password="any")
        page = browser.post(action, data=fields)
    assert page.status_code == 200, [r.url for r in page.history] + [page.url]
    assert page.url.startswith(portal), f"the flow ended at {page.url}"
    return page, prompts


def session_data(browser: requests.Session, portal: str) -> dict[str, object]:
    from importlib import import_module

    from django.conf import settings

    key = browser.cookies.get(settings.SESSION_COOKIE_NAME)
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=key)
    return dict(store.items()) if key else {}


def session_user(browser: requests.Session, portal: str) -> User | None:
    user_id = session_data(browser, portal).get("_auth_user_id")
    return User.objects.filter(pk=str(user_id)).first() if user_id else None


def roles_of(user: User) -> dict[str, str]:
    return dict(Membership.objects.filter(user=user).values_list("team__slug", "role"))


def redirects_to_sign_in(browser: requests.Session, portal: str) -> bool:
    answer = browser.get(f"{portal}/teams/", allow_redirects=False)
    return answer.status_code == 302 and answer.headers["Location"].startswith("/accounts/login/")


def test_sign_in_maps_teams_and_sign_out_ends_both_sessions(
    live_server: LiveServer, sso: str, teams: dict[str, Team], settings: Settings
) -> None:
    portal = str(live_server.url)
    browser = requests.Session()

    # First sign-in: the provider's account becomes a portal account, its groups its teams.
    landing, prompts = sign_in(browser, portal, sso, "ada")
    assert prompts == ["login", "consent"]
    ada = User.objects.get(username="ada")
    assert session_user(browser, portal) == ada
    assert urlsplit(landing.url).path == "/"
    assert ada.email == "ada@example.org"
    assert not ada.has_usable_password()
    assert roles_of(ada) == {"vision": TeamRole.RESEARCHER, "render": TeamRole.LEAD}
    assert ada.is_operator  # grid-operators
    assert not Team.objects.filter(slug="nosuchteam").exists()  # an unknown group is ignored, not created
    assert not redirects_to_sign_in(browser, portal)
    assert str(session_data(browser, portal)[ID_TOKEN_SESSION_KEY]).count(".") == 2  # kept for the sign-out

    # Sign-out: the portal's session ends, then the provider's (RP-initiated logout).
    logout = csrf_post(browser, portal, "/accounts/logout/")
    end_session = next(r for r in [*logout.history, logout] if r.url.startswith(f"{sso}/session/end"))
    query = parse_qs(urlsplit(end_session.url).query)
    assert query["post_logout_redirect_uri"] == [f"{portal}/accounts/login/"]
    assert query["id_token_hint"][0].count(".") == 2  # the signed ID token itself
    assert session_user(browser, portal) is None
    assert redirects_to_sign_in(browser, portal)
    action, fields = read_form(logout)  # the provider asks "sign out?"; yes
    back = browser.post(action, data={**fields, "logout": "yes"})
    assert back.url == f"{portal}/accounts/login/"

    # Memberships drift between sign-ins (a stale team, a role the claim no longer gives) ...
    Membership.objects.create(user=ada, team=teams["legacy"])
    Membership.objects.filter(user=ada, team=teams["vision"]).update(role=TeamRole.LEAD)
    User.objects.filter(pk=ada.pk).update(is_operator=False)
    # ... and the next sign-in sets them to the claim again; the provider asks for the password again.
    _, prompts = sign_in(browser, portal, sso, "ada")
    assert prompts[0] == "login"  # the provider's session ended with the portal's
    ada.refresh_from_db()
    assert session_user(browser, portal) == ada
    assert roles_of(ada) == {"vision": TeamRole.RESEARCHER, "render": TeamRole.LEAD}
    assert ada.is_operator
    assert User.objects.filter(username__startswith="ada").count() == 1


def test_a_taken_username_gets_a_suffix_and_sign_out_can_stay_local(
    live_server: LiveServer, sso: str, teams: dict[str, Team], settings: Settings
) -> None:
    settings.OIDC_RP_LOGOUT = False
    settings.OIDC_OPERATOR_GROUP = ""
    User.objects.create_user(username="grace", email="grace.local@example.org", password="x")
    portal = str(live_server.url)
    browser = requests.Session()

    sign_in(browser, portal, sso, "grace")
    user = session_user(browser, portal)
    assert user is not None and user.username == "grace-2" and user.email == "grace@example.org"
    assert roles_of(user) == {"vision": TeamRole.RESEARCHER}
    assert not user.is_operator

    logout = csrf_post(browser, portal, "/accounts/logout/")
    assert all(not r.url.startswith(sso) for r in [*logout.history, logout])
    assert urlsplit(logout.url).path == "/accounts/login/"
    assert redirects_to_sign_in(browser, portal)


def test_the_sign_in_page_lets_forms_reach_the_provider(live_server: LiveServer, sso: str, transactional_db: None) -> None:
    page = requests.get(f"{live_server.url}/accounts/login/", timeout=10)
    assert "Sign in with Dev SSO" in page.text
    policy = page.headers["Content-Security-Policy"]
    assert re.search(rf"form-action 'self' {re.escape(sso)}(;|$)", policy)
