"""Exit codes and the errors that carry them: every failure leaves gridctl with one documented code."""

from __future__ import annotations

from typing import Any

OK = 0
JOB_FAILED = 1  # wait: the job failed without an exit code of its own (else its exit code)
USAGE = 2  # bad arguments, an unreadable spec or config, not signed in
REFUSED = 3  # the API refused the request (400, 401, 403, 409 and other 4xx but 404)
NOT_FOUND = 4  # 404: no such job, template or route, or one you may not see
UNAVAILABLE = 5  # 5xx, the portal could not be reached, or 429/503 still after the retries
WAIT_TIMEOUT = 6  # wait --timeout passed before the job ended
JOB_CANCELLED = 7  # wait: the job was cancelled
JOB_TIMED_OUT = 8  # wait: the job hit its walltime
INTERRUPTED = 130  # Ctrl-C

EXIT_CODES = [
    (OK, "success (wait: the job succeeded)"),
    (JOB_FAILED, "wait: the job failed without an exit code of its own; a job's own non-zero exit code is passed on instead"),
    (USAGE, "usage error: bad arguments, an unreadable spec or config file, not signed in"),
    (REFUSED, "the API refused the request (400 with field-named errors, 401, 403, 409, other 4xx)"),
    (NOT_FOUND, "not found (404): no such job or template, or one you may not see"),
    (UNAVAILABLE, "server error (5xx), portal unreachable, or still throttled (429/503) after the retries"),
    (WAIT_TIMEOUT, "wait: --timeout passed before the job ended"),
    (JOB_CANCELLED, "wait: the job was cancelled"),
    (JOB_TIMED_OUT, "wait: the job hit its walltime"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
]


class CliError(Exception):
    """A failure to report on stderr and exit with `code`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class UsageError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, USAGE)


class ApiError(CliError):
    """The portal answered with an error status; `body` is its JSON (field -> messages) when it sent one."""

    def __init__(self, status: int, body: Any, method: str, path: str) -> None:
        self.status = status
        self.body = body
        code = NOT_FOUND if status == 404 else REFUSED if 400 <= status < 500 else UNAVAILABLE
        super().__init__(describe(status, body, method, path), code)


def field_messages(body: Any, prefix: str = "") -> list[str]:
    """DRF's error body flattened to 'field: message' lines; nested fields are dotted (params.scene)."""
    if isinstance(body, dict):
        lines = []
        for key, value in body.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key in ("detail", "non_field_errors") and not prefix:
                lines.extend(field_messages(value, ""))
            else:
                lines.extend(field_messages(value, name))
        return lines
    if isinstance(body, list):
        return [line for item in body for line in field_messages(item, prefix)]
    text = str(body)
    return [f"{prefix}: {text}" if prefix else text]


def describe(status: int, body: Any, method: str, path: str) -> str:
    what = {401: "not signed in or the token is not valid", 403: "forbidden", 404: "not found"}.get(status, "refused")
    if status >= 500:
        what = "server error"
    lines = field_messages(body) if body not in (None, "", {}) else []
    head = f"{method} {path}: {status} {what}"
    if status == 401:
        lines.append("sign in with `gridctl login URL` or set GRID_TOKEN")
    return head + "".join(f"\n  {line}" for line in lines)
