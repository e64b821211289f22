"""Kubernetes API errors in the portal's terms: a clear message and whether retrying can help.

The API server answers errors with a `Status` object (`reason`, `message`, `details.causes`);
these functions read it without the client library, so they are tested as plain data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cluster.backends.base import BackendError, BackendRejected, BackendUnavailable

RBAC_HINT = (
    "the portal's service account lacks this permission: apply the RBAC from `manage.py export_cluster_config --format k8s`"
)


@dataclass(frozen=True)
class ApiStatus:
    """The parts of a Kubernetes `Status` the portal reports."""

    code: int
    reason: str = ""
    message: str = ""
    causes: list[dict[str, str]] = field(default_factory=list)
    retry_after_s: int | None = None


def parse_status(code: int, body: str | bytes | None) -> ApiStatus:
    """Read a Status body; a body that is not one (a proxy's HTML page) keeps only the code."""
    try:
        data: Any = json.loads(body or "")
    except (TypeError, ValueError):
        return ApiStatus(code=code, message=str(body or "")[:200])
    if not isinstance(data, dict):
        return ApiStatus(code=code)
    raw_details = data.get("details")
    details: dict[str, Any] = raw_details if isinstance(raw_details, dict) else {}
    causes = [c for c in details.get("causes") or [] if isinstance(c, dict)]
    retry = details.get("retryAfterSeconds")
    return ApiStatus(
        code=int(data.get("code") or code),
        reason=str(data.get("reason") or ""),
        message=str(data.get("message") or ""),
        causes=[{k: str(v) for k, v in c.items()} for c in causes],
        retry_after_s=retry if isinstance(retry, int) else None,
    )


def _fields(status: ApiStatus) -> str:
    named = [f"{c.get('field', '?')}: {c.get('message', c.get('reason', ''))}" for c in status.causes]
    return "; ".join(named) or status.message


class ConflictError(BackendUnavailable):
    """A write lost a race (409): the object changed since it was read, or already exists."""

    def __init__(self, message: str, status: ApiStatus) -> None:
        super().__init__(message)
        self.status = status


class TooManyRequests(BackendUnavailable):
    """429: throttled, or an eviction a PodDisruptionBudget does not allow right now."""

    def __init__(self, message: str, status: ApiStatus) -> None:
        super().__init__(message)
        self.status = status

    @property
    def detail(self) -> str:
        """The server's own words, with the budget's cause when it gave one."""
        causes = [c.get("message", "") for c in self.status.causes if c.get("message")]
        return "; ".join([self.status.message, *causes]).strip("; ")[:300]


class NotFoundError(BackendRejected):
    """The object (or its kind: a CRD not installed) does not exist (404)."""


def from_status(action: str, status: ApiStatus) -> BackendError:
    """The BackendError for an error answer to `action` (e.g. "create Job team-a/gp-7")."""
    code, text = status.code, status.message or status.reason or "no message"
    if code == 401:
        return BackendRejected(f"{action}: the API server did not accept the portal's credentials (401): {text}")
    if code == 403:
        return BackendRejected(f"{action}: forbidden (403): {text}; {RBAC_HINT}")
    if code == 404:
        return NotFoundError(f"{action}: not found (404): {text}")
    if code == 409:
        return ConflictError(f"{action}: conflict (409): {text}", status)
    if code == 422:
        return BackendRejected(f"{action}: the API server found the object invalid (422): {_fields(status)}")
    if code == 400:
        return BackendRejected(f"{action}: bad request (400): {text}")
    if code == 429:
        wait = f"; retry after {status.retry_after_s} s" if status.retry_after_s else ""
        return TooManyRequests(f"{action}: too many requests (429): {text}{wait}", status)
    if code >= 500:
        return BackendUnavailable(f"{action}: the API server failed ({code}): {text}")
    return BackendError(f"{action}: unexpected answer ({code}): {text}", retryable=False)


def unreachable(action: str, exc: BaseException, host: str) -> BackendUnavailable:
    """The API server could not be reached at all (refused, reset, timed out, TLS failure)."""
    return BackendUnavailable(f"{action}: the Kubernetes API at {host} is unreachable: {type(exc).__name__}: {str(exc)[:200]}")
