"""A circuit breaker for the optional shared services (Redis as cache, broker and channel layer).

When such a service fails, every caller in the process skips it for a short cool-down instead of
each waiting for its own connection timeout; the first call after the cool-down tries again. The
portal keeps working meanwhile on a local fallback (a memory cache, the periodic cycles, the
pages' own polling), and `/healthz` and the pages say what is degraded.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class Breaker:
    """Open (skip the service) for `cooldown_s` after a failure; closed again after the next success."""

    def __init__(self, name: str, cooldown_s: float = 2.0) -> None:
        self.name = name
        self.cooldown_s = cooldown_s
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self.down_since: float | None = None  # monotonic time of the first failure of this outage
        self.last_error = ""

    @property
    def is_open(self) -> bool:
        """True while the service should be skipped (a failure less than `cooldown_s` ago)."""
        return time.monotonic() < self._retry_at

    @property
    def is_down(self) -> bool:
        """True from a failure until the next success (the service is believed unreachable)."""
        return self.down_since is not None

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            self._retry_at = now + self.cooldown_s
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            first = self.down_since is None
            if first:
                self.down_since = now
        if first:
            log.warning("%s unreachable, degrading until it answers again: %s", self.name, self.last_error)

    def succeeded(self) -> None:
        if self.down_since is None:
            return
        with self._lock:
            since, self.down_since, self._retry_at = self.down_since, None, 0.0
        if since is not None:
            log.warning("%s answers again after %.1f s", self.name, time.monotonic() - since)

    def state(self) -> dict[str, object]:
        if self.down_since is None:
            return {"ok": True}
        return {"ok": False, "down_for_s": round(time.monotonic() - self.down_since, 1), "error": self.last_error}
