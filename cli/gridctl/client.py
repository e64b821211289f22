"""The portal's REST API over HTTP: token auth, JSON, and bounded retries on 429/503 with Retry-After.

The portal answers 429 (a throttled token) and 503 (a database outage) having saved nothing, so a
retry is safe for every method. The wait is the server's Retry-After, capped by `max_wait_s`; a
Retry-After above the cap, or more than `retries` retries, ends with exit code UNAVAILABLE.
"""

from __future__ import annotations

import email.utils
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import httpx

from gridctl import __version__
from gridctl.errors import UNAVAILABLE, ApiError, CliError

RETRY_STATUSES = (429, 503)
DEFAULT_WAIT_S = 2.0  # when a 429/503 carries no Retry-After

# Replaced in tests to record the waits instead of sleeping them.
sleep: Callable[[float], None] = time.sleep


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass
class RetryPolicy:
    retries: int = 4
    max_wait_s: float = 60.0


class Client:
    """One portal, one token. Methods return the decoded JSON body or raise ApiError / CliError."""

    def __init__(
        self, url: str, token: str, *, timeout_s: float = 30.0, policy: RetryPolicy | None = None, notices: TextIO | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.notices = notices or sys.stderr
        self.policy = policy or RetryPolicy()
        self.http = httpx.Client(
            base_url=self.url,
            timeout=timeout_s,
            headers={"Authorization": f"Token {token}", "Accept": "application/json", "User-Agent": f"gridctl/{__version__}"},
        )
        self.token = token

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        response = self._send(method, path, params, body)
        if response.status_code >= 400:
            raise ApiError(response.status_code, _body(response), method, path)
        return _body(response) if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v not in (None, "", False)})

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body=body)

    def pages(self, path: str, params: dict[str, Any], limit: int | None) -> Iterator[dict[str, Any]]:
        """Rows of a cursor-paged list, following `next` links until `limit` rows (None: all)."""
        page: Any = self.get(path, **params)
        seen = 0
        while True:
            rows = page.get("results", []) if isinstance(page, dict) else page
            for row in rows:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield row
            following = page.get("next") if isinstance(page, dict) else None
            if not following or (limit is not None and seen >= limit):
                return
            page = self.request("GET", str(following))

    def _send(self, method: str, path: str, params: dict[str, Any] | None, body: Any) -> httpx.Response:
        for attempt in range(self.policy.retries + 1):
            try:
                response = self.http.request(method, path, params=params, json=body)
            except httpx.TimeoutException as exc:
                raise CliError(f"{method} {self.url}{path}: the portal did not answer in time ({exc})", UNAVAILABLE) from None
            except httpx.HTTPError as exc:
                raise CliError(f"cannot reach the portal at {self.url}: {exc}", UNAVAILABLE) from None
            if response.status_code not in RETRY_STATUSES:
                return response
            wait = retry_after(response.headers.get("Retry-After"))
            wait = DEFAULT_WAIT_S if wait is None else wait
            if attempt == self.policy.retries or wait > self.policy.max_wait_s:
                return response
            print(
                f"gridctl: {response.status_code} from {method} {path}; retrying in {wait:g} s "
                f"(Retry-After; try {attempt + 2} of {self.policy.retries + 1})",
                file=self.notices,
            )
            sleep(wait)
        raise AssertionError("unreachable")  # the loop returns on its last try


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text.strip()[:500]
