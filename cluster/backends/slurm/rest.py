"""A small slurmrestd client (OpenAPI v0.0.38) on the standard library, with a circuit breaker.

Errors are sorted the way the portal needs them: an unreachable or slow slurmrestd, a 5xx with
no Slurm error, or a Slurm error that says the controller cannot be reached is `BackendUnavailable`
(retry later); any other Slurm error is `BackendRejected`. After a failure the client fails fast
for a growing pause (1 s, 2 s, 4 s ... up to `backoff_max_s`), so pages that ask Slurm stay
quick while slurmctld is down, and the first call after the pause finds out whether it is back.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache

from cluster.backends.base import BackendRejected, BackendUnavailable
from cluster.backends.slurm.tokens import TokenIssuer

API = "/slurm/v0.0.38"
DBAPI = "/slurmdb/v0.0.38"
BREAKER_KEY = "cluster.slurm.degraded"

# Slurm error numbers that mean "the controller or database is unreachable or busy", not "no".
# slurm_errno.h: 1000-1999 communication errors, 5000-5999 socket errors, 7000-7999 slurmdbd
# connection errors. The 2000s (ESLURM_*: bad account, QOS, partition ...) are refusals.
RETRYABLE_ERRNO_RANGES = ((1000, 1999), (5000, 5999), (7000, 7999))
# Right after slurmctld restarts its nodes are briefly unknown and a submit is refused with
# "Required node not available": a passing state of the cluster, so the submit is retried.
RETRYABLE_WORDS = (
    "unable to contact", "connection refused", "timed out", "communication", "unreachable", "try again",
    "node not available", "nodes busy",
)  # fmt: skip


@dataclass(frozen=True)
class SlurmError:
    """One entry of a slurmrestd `errors` list."""

    number: int
    text: str

    @property
    def retryable(self) -> bool:
        if any(low <= self.number <= high for low, high in RETRYABLE_ERRNO_RANGES):
            return True
        return any(word in self.text.lower() for word in RETRYABLE_WORDS)


def parse_errors(body: dict[str, Any]) -> list[SlurmError]:
    found = []
    for entry in body.get("errors") or []:
        if isinstance(entry, dict):
            text = str(entry.get("description") or entry.get("error") or entry)
            found.append(SlurmError(int(entry.get("error_number") or entry.get("errno") or 0), text))
    return found


# A job submitted held (to be pinned to nodes, then released) comes back with ESLURM_JOB_HELD's text
# as an "error" (number 0 in v0.0.38) beside its job id: the submit succeeded.
JOB_HELD = 2053
JOB_HELD_TEXT = "Job is in held state"


def raise_for_errors(status: int, body: dict[str, Any], what: str) -> None:
    """Turn slurmrestd's answer into the backend errors; return quietly when it succeeded."""
    errors = [e for e in parse_errors(body) if e.number != JOB_HELD and not e.text.startswith(JOB_HELD_TEXT)]
    if status < 400 and not errors:
        return
    message = "; ".join(e.text for e in errors) or f"HTTP {status}"
    if status in (502, 503, 504) or any(e.retryable for e in errors) or (status >= 500 and not errors):
        raise BackendUnavailable(f"Slurm could not {what}: {message}")
    raise BackendRejected(f"Slurm refused to {what}: {message}")


class Breaker:
    """Failure count and the time of the next try, shared through the cache by every process."""

    def __init__(self, backoff_max_s: float) -> None:
        self.backoff_max_s = backoff_max_s

    def state(self) -> dict[str, Any] | None:
        value = cache.get(BREAKER_KEY)
        return value if isinstance(value, dict) else None

    def check(self) -> None:
        state = self.state()
        if state and state["retry_at"] > time.time():
            wait = state["retry_at"] - time.time()
            raise BackendUnavailable(f"Slurm is degraded ({state['error']}); next try in {wait:.1f}s")

    def failed(self, error: str) -> None:
        state = self.state() or {"failures": 0, "since": time.time()}
        failures = int(state["failures"]) + 1
        pause = min(self.backoff_max_s, 2.0 ** (failures - 1))
        cache.set(BREAKER_KEY, {**state, "failures": failures, "retry_at": time.time() + pause, "error": error[:200]}, 3600)

    def succeeded(self) -> None:
        if self.state() is not None:
            cache.delete(BREAKER_KEY)


class RestClient:
    """GET/POST/DELETE against slurmrestd as a given Unix user."""

    def __init__(self, base_url: str, tokens: TokenIssuer, timeout_s: float, breaker: Breaker) -> None:
        self.base_url = base_url
        self.tokens = tokens
        self.timeout_s = timeout_s
        self.breaker = breaker

    def call(
        self, method: str, path: str, *, user: str, what: str, body: Any = None, query: dict[str, str] | None = None
    ) -> dict[str, Any]:
        self.breaker.check()
        url = self.base_url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        try:
            status, answer = self._send(method, url, user, body)
        except BackendUnavailable as exc:
            self.breaker.failed(str(exc))
            raise
        try:
            raise_for_errors(status, answer, what)
        except BackendUnavailable as exc:
            self.breaker.failed(str(exc))
            raise
        self.breaker.succeeded()
        return answer

    def _send(self, method: str, url: str, user: str, body: Any) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("X-SLURM-USER-NAME", user)
        request.add_header("X-SLURM-USER-TOKEN", self.tokens.token_for(user))
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendUnavailable(f"slurmrestd at {self.base_url} is unreachable: {reason}") from exc


def _json(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"errors": [{"error_number": 0, "description": raw[:200].decode(errors="replace")}]}
    return value if isinstance(value, dict) else {}
