"""Retries on 429/503 after Retry-After, bounded; against a tiny local HTTP server and the live portal's token throttle."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from gridctl import client as gridctl_client
from gridctl import errors
from gridctl.main import main
from pytest_django import Settings


class Scripted(BaseHTTPRequestHandler):
    """Answers each request with the next (status, headers, body) of the server's script; records the paths."""

    def do_GET(self) -> None:
        server: Any = self.server
        status, headers, body = server.script.pop(0) if server.script else (200, {}, [])
        server.seen.append(self.path)
        payload = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Any]:
    httpd: Any = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    httpd.script, httpd.seen = [], []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    asked: list[float] = []
    monkeypatch.setattr(gridctl_client, "sleep", asked.append)
    return asked


def run(server: Any, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    code = main(["--url", url, "--token", "t", *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_a_429_is_retried_after_its_retry_after(server: Any, waits: list[float]) -> None:
    server.script = [(429, {"Retry-After": "3"}, {"detail": "slow down"}), (200, {}, {"results": [], "next": None})]
    code, out, err = run(server, "list", "-o", "json")
    assert code == 0, err
    assert json.loads(out) == []
    assert waits == [3.0]
    assert len(server.seen) == 2
    assert "429 from GET /api/v1/jobs/; retrying in 3 s" in err


def test_a_503_without_retry_after_waits_the_default(server: Any, waits: list[float]) -> None:
    server.script = [(503, {}, {"detail": "database unavailable"}), (200, {}, {"results": [], "next": None})]
    assert run(server, "list")[0] == 0
    assert waits == [gridctl_client.DEFAULT_WAIT_S]


def test_retries_are_bounded_and_end_with_exit_5(server: Any, waits: list[float]) -> None:
    server.script = [(503, {"Retry-After": "1"}, {"detail": "database unavailable"})] * 10
    code, _, err = run(server, "--retries", "2", "list")
    assert code == errors.UNAVAILABLE == 5
    assert waits == [1.0, 1.0] and len(server.seen) == 3
    assert "503 server error" in err and "database unavailable" in err


def test_a_retry_after_longer_than_the_cap_is_not_waited(server: Any, waits: list[float]) -> None:
    server.script = [(429, {"Retry-After": "3600"}, {"detail": "Too many failed attempts"})]
    code, _, err = run(server, "--max-retry-wait", "60", "list")
    assert code == errors.REFUSED
    assert waits == [] and "429" in err and "Too many failed attempts" in err


def test_an_unreachable_portal_is_exit_5(waits: list[float]) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--url", "http://127.0.0.1:9", "--token", "t", "list"], out=out, err=err)
    assert code == errors.UNAVAILABLE and "cannot reach the portal" in err.getvalue()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_portals_token_throttle_is_reported_with_its_retry_after(portal: str, settings: Settings, waits: list[float]) -> None:
    settings.TOKEN_AUTH_FAILURE_LIMIT = 1
    settings.TOKEN_AUTH_FAILURE_WINDOW_S = 300
    out, err = io.StringIO(), io.StringIO()
    assert main(["--url", portal, "--token", "gp_wrongwrong", "list"], out=out, err=err) == errors.REFUSED  # 401, counted
    code = main(["--url", portal, "--token", "gp_wrongwrong", "--max-retry-wait", "10", "list"], out=out, err=err)
    assert code == errors.REFUSED
    assert "429" in err.getvalue() and "Too many failed attempts" in err.getvalue()
    assert waits == []  # the portal's Retry-After (300 s) is over the cap: reported, not waited
