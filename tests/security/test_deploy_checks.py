"""Production settings: `check --deploy` is clean, responses carry the security headers, secrets can come from files.

The settings under test are tests/security/production_settings.py, which is grid.settings with
its security block (docs/security.md).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from django.test import Client
from pytest_django import Settings

from jobs.models import Job
from portal.env import ConfigError, env_secret
from portal.models import User
from portal.security import content_security_policy
from tests.security import production_settings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "p7Vq!x2#Lm9@Rt4$Wz8%Yc3^Nb6&Hd1*Gf5(Js0)Kk" + "-deploy-only"
DEPLOYMENT = {
    "DJANGO_SETTINGS_MODULE": "tests.security.production_settings",
    "DEBUG": "false",
    "ALLOWED_HOSTS": "grid.example.org",
    "CSRF_TRUSTED_ORIGINS": "https://grid.example.org",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_PROXY_SSL_HEADER": "true",
    "DATABASE_URL": "postgres://gridportal@127.0.0.1:5432/gridportal",
}
# drf-spectacular's deploy check reports these schema issues of the app code (docs/security.md lists them).
SPECTACULAR_KNOWN = "drf_spectacular.W001"


def deploy_check(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRET_KEY", "DJANGO_", "SECURE_", "DATABASE_"))}
    env |= DEPLOYMENT | {"PORTAL_DATA_DIR": str(tmp_path)} | extra
    if "SECRET_KEY_FILE" not in extra:
        env["SECRET_KEY"] = SECRET
    command = [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def warnings_of(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("?: (") or ": (" in line[:60]]


def test_the_deployment_settings_raise_no_security_warning(tmp_path: Path) -> None:
    done = deploy_check(tmp_path)
    security = [w for w in warnings_of(done) if SPECTACULAR_KNOWN not in w]
    assert security == [], done.stdout + done.stderr


def test_the_deployment_settings_pass_check_deploy_with_no_warning_at_all(tmp_path: Path) -> None:
    done = deploy_check(tmp_path)
    assert done.returncode == 0 and warnings_of(done) == [], done.stdout + done.stderr


def test_without_the_deployment_variables_check_deploy_fails(tmp_path: Path) -> None:
    done = deploy_check(tmp_path, SECURE_SSL_REDIRECT="false", SESSION_COOKIE_SECURE="false")
    text = done.stdout + done.stderr
    assert done.returncode != 0 and "security.W008" in text and "security.W012" in text


def test_the_secret_key_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret_key"
    secret.write_text(SECRET + "\n")
    done = deploy_check(tmp_path, SECRET_KEY_FILE=str(secret))
    assert [w for w in warnings_of(done) if SPECTACULAR_KNOWN not in w] == [], done.stdout + done.stderr


def test_a_secret_set_twice_or_in_an_empty_file_stops_start_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    monkeypatch.setenv("DATABASE_PASSWORD", "x")
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", str(empty))
    with pytest.raises(ConfigError, match="both set"):
        env_secret("DATABASE_PASSWORD")
    monkeypatch.delenv("DATABASE_PASSWORD")
    with pytest.raises(ConfigError, match="empty"):
        env_secret("DATABASE_PASSWORD")
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="cannot read"):
        env_secret("DATABASE_PASSWORD")
    (tmp_path / "pw").write_text("s3cret\n")
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", str(tmp_path / "pw"))
    assert env_secret("DATABASE_PASSWORD") == "s3cret"


# The headers of a response under the deployment settings


@pytest.fixture
def deployed(settings: Settings) -> Settings:
    for name in (
        "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD", "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "SECURE_CONTENT_TYPE_NOSNIFF", "SECURE_REFERRER_POLICY",
        "SECURE_CROSS_ORIGIN_OPENER_POLICY", "X_FRAME_OPTIONS", "MIDDLEWARE", "ACCOUNT_RATE_LIMITS",
    ):  # fmt: skip
        setattr(settings, name, getattr(production_settings, name))
    assert settings.SECURE_HSTS_SECONDS >= 31_536_000  # DEBUG is off in the test settings, so production defaults apply
    return settings


def test_a_page_carries_hsts_nosniff_referrer_policy_frame_denial_and_the_csp(
    deployed: Settings, web: Callable[[User | None], Client], alice: User
) -> None:
    response = web(alice).get("/", secure=True)
    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    policy = response["Content-Security-Policy"]
    for directive in ("script-src 'self' 'nonce-", "object-src 'none'", "frame-ancestors 'none'", "base-uri 'self'",
                      "connect-src 'self' ws: wss:", "img-src 'self' data: blob:"):  # fmt: skip
        assert directive in policy
    assert "unsafe-eval" not in policy and "script-src 'self' 'unsafe-inline'" not in policy


def test_every_inline_script_of_a_page_carries_that_responses_nonce(
    deployed: Settings, web: Callable[[User | None], Client], alice: User, submit: Callable[..., Job]
) -> None:
    job = submit(alice, name="nonce")
    client = web(alice)
    for url in ("/", f"/jobs/{job.pk}/", "/teams/", "/teams/vision/"):
        response = client.get(url, secure=True)
        nonce = response["Content-Security-Policy"].split("'nonce-")[1].split("'")[0]
        html = response.content.decode()
        inline = html.count("<script>") + html.count("<script nonce=")
        assert inline >= 1 and html.count(f'<script nonce="{nonce}">') == inline, url
    assert client.get("/", secure=True)["Content-Security-Policy"] != client.get("/", secure=True)["Content-Security-Policy"]


def test_the_session_and_csrf_cookies_are_secure_and_the_session_cookie_httponly(
    deployed: Settings, client: Client, alice: User
) -> None:
    page = client.get("/accounts/login/", secure=True)
    assert page.cookies["csrftoken"]["secure"]
    signed_in = client.post("/accounts/login/", {"login": "alice", "password": "pw-for-tests"}, secure=True)
    assert signed_in.status_code == 302
    session = signed_in.cookies["sessionid"]
    assert session["secure"] and session["httponly"] and session["samesite"] == "Lax"


def test_every_form_posts_with_a_csrf_token(
    web: Callable[[User | None], Client], alice: User, bob: User, olivia: User, submit: Callable[..., Job]
) -> None:
    """Every <form method="post"> the portal renders carries the token; a post without it is refused."""
    job = submit(alice, name="csrf")
    pages = {
        alice: ["/", "/tokens/", f"/jobs/{job.pk}/", "/jobs/new/custom/"],
        bob: ["/teams/vision/"],
        olivia: ["/planning/", "/console/nodes/"],
    }
    for user, urls in pages.items():
        for url in urls:
            html = web(user).get(url).content.decode()
            forms = html.lower().split('method="post"')[1:]
            assert all("csrfmiddlewaretoken" in form.split("</form>")[0] for form in forms), url
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    assert strict.post("/tokens/", {"name": "no-token"}).status_code == 403


def test_the_api_docs_are_served_by_the_portal_under_the_normal_policy(alice: User) -> None:
    from django.test import Client

    assert (
        "cdn." not in content_security_policy("n") and "unsafe-inline" not in content_security_policy("n").split("style-src")[0]
    )
    client = Client()
    client.force_login(alice)
    page = client.get("/api/docs/")
    html = page.content.decode()
    assert page.status_code == 200 and "cdn." not in html and "http" not in html.split("<body")[0].replace("http-equiv", "")
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', html)
    assert scripts and all(src.startswith("/") for src in scripts), scripts
    assert all(client.get(src.split("?")[0] if "static" in src else src).status_code == 200 for src in scripts)
    assert "<script>" not in html.replace(" ", "")  # nothing inline: the policy allows only the portal's files
