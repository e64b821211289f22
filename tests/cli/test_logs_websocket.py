"""logs -f over a websocket that speaks the job page's frames (jobs/live.py: a snapshot, then ticks).

The portal's /ws/jobs/N/ accepts browser sessions only (it refuses an API token; see docs/cli.md), so
the live-portal test covers the fallback to polling; here a local server answers the API and the
websocket on one port, to check what gridctl does with the frames: every line once, in order, the
lines missed between the API read and the snapshot filled from the API, the end on the job's end.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import pytest
from gridctl.main import main
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

LINES = [f"step {i}" for i in range(1, 9)]


class FakePortal:
    """The API's job and log reads plus the job page's websocket, on one port."""

    def __init__(self) -> None:
        self.available = 2  # lines the API has when gridctl first reads
        self.handshakes: list[Any] = []
        self.state = "running"

    def api(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.startswith("/ws/"):
            self.handshakes.append(request.headers)
            return None
        if "/logs/" in request.path:
            offset = int(request.path.partition("offset=")[2] or 0)
            body: Any = {"offset": offset, "lines": LINES[offset : self.available]}
        else:
            body = {"id": 7, "name": "job", "state": self.state, "exit_code": 0 if self.state == "succeeded" else None}
        return connection.respond(HTTPStatus.OK, json.dumps(body))

    def socket(self, connection: ServerConnection) -> None:
        self.available = 5  # lines 3-5 were written before the page opened: the snapshot shows the tail from 4
        connection.send(json.dumps({"type": "snapshot", "job": {"state": "running"}, "log": {"offset": 5, "lines": LINES[3:5]}}))
        connection.send(json.dumps({"type": "tick", "job": {"state": "running"}, "log": {"offset": 7, "lines": LINES[5:7]}}))
        self.available, self.state = 8, "succeeded"
        connection.send(json.dumps({"type": "tick", "job": {"state": "succeeded"}, "log": {"offset": 8, "lines": LINES[7:8]}}))
        with contextlib.suppress(ConnectionClosed):
            connection.recv()  # until gridctl closes


@pytest.fixture
def fake() -> Iterator[tuple[FakePortal, str]]:
    portal = FakePortal()
    server: Server = serve(portal.socket, "127.0.0.1", 0, process_request=portal.api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield portal, f"http://127.0.0.1:{server.socket.getsockname()[1]}"
    server.shutdown()


def test_logs_follow_prints_each_line_once_from_the_websocket_frames(fake: tuple[FakePortal, str]) -> None:
    portal, url = fake
    out, err = io.StringIO(), io.StringIO()
    code = main(["--url", url, "--token", "gp_key", "logs", "-f", "7"], out=out, err=err)
    assert code == 0, err.getvalue()
    assert out.getvalue().splitlines() == LINES
    assert err.getvalue() == ""  # no fallback
    (headers,) = portal.handshakes
    assert headers["Authorization"] == "Token gp_key" and headers["Origin"] == url
