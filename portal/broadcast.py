"""Send to websocket groups once the current transaction commits (never for rolled-back work).

A push is a courtesy: the pages also poll on their own, so a send that fails (Redis down) is
logged and dropped, never raised into the request or task whose work is already saved.

Sync code (views, tasks) sends through one event loop per process, kept in a daemon thread, so
the channel layer's Redis connection is reused instead of a loop and a connection being made per
push. Change notices that only say "read again" (`grid.changed`) are coalesced per process: at most
one per NOTICE_GAP_S, the last one always sent (late by at most that gap).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Coroutine
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)

# Live pages read at most this often after a notice, so more notices than that tell them nothing.
NOTICE_GAP_S = 0.5
COALESCED = frozenset({("grid", "grid.changed")})
SEND_TIMEOUT_S = 2.0


class _Sender:
    """The process's event loop for pushes from sync code, started on first use (and again after a fork)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0
        self._last: dict[tuple[str, str], float] = {}
        self._pending: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Future[None]] = set()

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                if self._pid not in (0, os.getpid()):  # a forked child: the parent's timers did not come along
                    self._last.clear()
                    self._pending.clear()
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="broadcast", daemon=True).start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def run(self, coro: Coroutine[Any, Any, Any]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop()).result(timeout=SEND_TIMEOUT_S)

    def coalesce(self, group: str, message: dict[str, Any]) -> bool:
        """True if this notice is folded into one already sent or scheduled; else the caller sends it now."""
        key = (group, str(message.get("type")))
        now = time.monotonic()
        with self._lock:
            if key in self._pending:
                return True
            wait = self._last.get(key, -NOTICE_GAP_S) + NOTICE_GAP_S - now
            if wait <= 0:
                self._last[key] = now
                return False
            self._pending.add(key)
        loop = self.loop()
        loop.call_soon_threadsafe(loop.call_later, wait, self._trailing, key, group, message)
        return True

    def _trailing(self, key: tuple[str, str], group: str, message: dict[str, Any]) -> None:
        with self._lock:
            self._pending.discard(key)
            self._last[key] = time.monotonic()
        task = asyncio.ensure_future(_send(group, message), loop=self._loop)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


_sender = _Sender()


async def _send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(group, message)
    except Exception as exc:  # noqa: BLE001 - a lost push must never fail saved work
        log.warning("push to %s dropped: %s: %s", group, type(exc).__name__, exc)


def send_now(group: str, message: dict[str, Any]) -> None:
    if get_channel_layer() is None:
        return
    if (group, message.get("type")) in COALESCED and _sender.coalesce(group, message):
        return
    try:
        _sender.run(_send(group, message))
    except Exception as exc:  # noqa: BLE001 - a lost push must never fail saved work (a timeout included)
        log.warning("push to %s dropped: %s: %s", group, type(exc).__name__, exc)


def send_on_commit(group: str, message: dict[str, Any]) -> None:
    def push() -> None:
        send_now(group, message)

    push.__qualname__ = f"push to {group}"
    transaction.on_commit(push, robust=True)
