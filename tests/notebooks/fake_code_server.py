"""A TEST DOUBLE of code-server's HTTP surface, run as the simulator's code-server in the notebooks tests.

code-server itself needs Node 24, which the development and CI machines do not have, so the tests
point NOTEBOOK_CODE_SERVER at this script. It is not code-server: it serves no editor, only what
the portal relies on, as code-server 4.x does it (read from its source, src/node/routes/index.ts,
src/node/http.ts, src/node/util.ts, src/node/routes/health.ts):

- the command line: `--bind-addr host:port --auth password ... FOLDER`, HASHED_PASSWORD in the
  environment; with a SHA-256 hashed password, a request is signed in when its `code-server-session`
  cookie equals that hash (no token header exists); otherwise a page gets a redirect to ./login;
- `/healthz` is never signed in and is no heartbeat: `{"status": "alive"|"expired", "lastHeartbeat": ms}`;
  every other request beats the heart, at most once a minute, and lastHeartbeat starts at 0;
- an `Origin` that is not the request's host is refused (403);
- `/` answers a page naming the folder it opened; a websocket on any path echoes what it is sent,
  standing for VS Code's remote channel.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from http import HTTPStatus
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

HEARTBEAT_EVERY_MS = 60_000


class Heart:
    """code-server's Heart: a beat is recorded only if the last one is a minute old."""

    last_ms = 0

    def beat(self) -> None:
        now = int(time.time() * 1000)
        if now - self.last_ms >= HEARTBEAT_EVERY_MS:
            self.last_ms = now


def signed_in(request: Request, hashed: str) -> bool:
    cookies = dict(part.strip().split("=", 1) for part in request.headers.get("Cookie", "").split(";") if "=" in part)
    return bool(hashed) and cookies.get("code-server-session") == hashed


def answer(status: int, body: str, content_type: str = "text/html", **extra: str) -> Response:
    headers = Headers({"Content-Type": content_type, "Content-Length": str(len(body.encode())), **extra})
    return Response(status, HTTPStatus(status).phrase, headers, body.encode())


def handler(heart: Heart, hashed: str, folder: str):  # type: ignore[no-untyped-def]
    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path.rstrip("/") == "/healthz":
            alive = int(time.time() * 1000) - heart.last_ms < 5 * HEARTBEAT_EVERY_MS
            return answer(
                200, json.dumps({"status": "alive" if alive else "expired", "lastHeartbeat": heart.last_ms}), "application/json"
            )
        heart.beat()
        origin = request.headers.get("Origin")
        if origin and urlsplit(origin).netloc != request.headers.get("Host"):
            return answer(403, "Forbidden", "text/plain")
        if not signed_in(request, hashed):
            return answer(302, "", Location="./login")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None  # the handshake goes on: the echo below
        return answer(200, f"<html><body><h1>code-server</h1><p id='folder'>{folder}</p><p id='path'>{path}</p></body></html>")

    return process_request


async def echo(connection: ServerConnection) -> None:
    async for message in connection:
        await connection.send(message)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind-addr", required=True)
    parser.add_argument("--auth", choices=["password", "none"], required=True)
    parser.add_argument("--user-data-dir")
    parser.add_argument("--extensions-dir")
    parser.add_argument("--disable-telemetry", action="store_true")
    parser.add_argument("--disable-update-check", action="store_true")
    parser.add_argument("folder")
    args = parser.parse_args()
    host, _, port = args.bind_addr.rpartition(":")
    heart = Heart()
    async with serve(echo, host, int(port), process_request=handler(heart, os.environ.get("HASHED_PASSWORD", ""), args.folder)):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
