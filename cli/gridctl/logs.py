"""A job's log: printed from GET /api/v1/jobs/N/logs/ (pages of up to 1,000 lines), and followed with
-f over the job page's websocket (/ws/jobs/N/), or by polling the API when the websocket cannot be
reached or refuses the token, which gridctl says on stderr."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO
from urllib.parse import urlsplit

from websockets.exceptions import InvalidHandshake, InvalidStatus, WebSocketException
from websockets.sync.client import connect
from websockets.typing import Origin

from gridctl.client import Client

TERMINAL = ("succeeded", "failed", "cancelled")
PAGE = 1000  # the API's MAX_LOG_LINES

# Replaced in tests, like client.sleep.
sleep: Callable[[float], None] = time.sleep


class Printer:
    """Prints each log line once, however the lines arrive (API pages, websocket snapshot and ticks)."""

    def __init__(self, client: Client, job_id: int, out: TextIO) -> None:
        self.client, self.job_id, self.out = client, job_id, out
        self.printed = 0

    def fetch(self) -> None:
        """Print every line the API has beyond what was printed."""
        while True:
            page = self.client.get(f"/api/v1/jobs/{self.job_id}/logs/", offset=self.printed or None)
            lines = page.get("lines", []) if isinstance(page, dict) else []
            self.emit(lines)
            if len(lines) < PAGE:
                return

    def emit(self, lines: list[str]) -> None:
        for line in lines:
            self.out.write(line.rstrip("\n") + "\n")
        self.printed += len(lines)
        self.out.flush()

    def frame(self, log: dict[str, Any]) -> None:
        """A websocket frame's log part: lines ending at absolute `offset`; a gap is filled from the API."""
        lines, end = list(log.get("lines") or []), int(log.get("offset") or 0)
        start = end - len(lines)
        if start > self.printed:
            self.fetch()
            return
        self.emit(lines[self.printed - start :] if self.printed >= start else lines)


def websocket_url(base: str, job_id: int) -> str:
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/ws/jobs/{job_id}/"


def follow(client: Client, job_id: int, out: TextIO, interval_s: float, err: TextIO = sys.stderr) -> dict[str, Any]:
    """Print the log and follow it until the job ends; returns the job as the API last showed it."""
    printer = Printer(client, job_id, out)
    printer.fetch()
    why = follow_websocket(client, printer, err)
    if why is None:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}/")
        printer.fetch()  # lines written between the last tick and the end
        return job
    err.write(f"gridctl: live log websocket unavailable ({why}); following by polling the API every {interval_s:g} s\n")
    return poll(client, printer, interval_s)


def poll(client: Client, printer: Printer, interval_s: float) -> dict[str, Any]:
    while True:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{printer.job_id}/")
        printer.fetch()
        if job.get("state") in TERMINAL:
            return job
        sleep(interval_s)


def follow_websocket(client: Client, printer: Printer, err: TextIO) -> str | None:
    """Follow over the websocket until the job ends: None when it did, else why the websocket could not be used."""
    url = websocket_url(client.url, printer.job_id)
    try:
        with connect(
            url,
            origin=Origin(client.url),  # the portal refuses a websocket from another origin
            additional_headers={"Authorization": f"Token {client.token}"},
            open_timeout=5,
        ) as socket:
            for message in socket:
                frame = json.loads(message)
                if not isinstance(frame, dict):
                    continue
                if isinstance(frame.get("log"), dict):
                    printer.frame(frame["log"])
                if (frame.get("job") or {}).get("state") in TERMINAL:
                    return None
            code = socket.close_code
            return f"the portal closed it ({code})" if code not in (None, 1000) else "it closed before the job ended"
    except InvalidStatus as exc:
        return f"handshake answered {exc.response.status_code}"
    except (InvalidHandshake, WebSocketException, OSError, TimeoutError) as exc:
        return str(exc) or type(exc).__name__
