"""The dashboards of one process, served from one computation per tick (portal.fanout).

Every TICK_S, and at most MIN_GAP_S after a change notice (`grid.changed`), the feed reads the
grid's figures once and the waiting jobs of every team once, then sends each dashboard the
figures with the queue of the teams its viewer may see (the jobs' own rule, checked per dashboard
per tick). Dashboards whose viewers see the same teams get the same encoded frame. The pushed
heat map (`telemetry.grid`: node names and numbers, no job) is encoded once and written to every
dashboard whose session still stands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from grid import live
from portal import broadcast
from portal.fanout import Hub, Message, Subscriber
from portal.permissions import is_operator
from portal.viewers import Viewer

log = logging.getLogger(__name__)

GROUP = "grid"
TICK_S = 2.0
MIN_GAP_S = broadcast.NOTICE_GAP_S  # bursts of changes (an admission cycle) coalesce into one message
HISTORY_TTL_S = 2.0  # the history charts a page gets on (re)connect, shared by the pages opened meanwhile


class GridFeed:
    """This process's dashboards."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.dashboards: set[Subscriber] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._history: tuple[float, str] = (-HISTORY_TTL_S, "")

    async def open(self, subscriber: Subscriber, user: Any) -> None:
        """A dashboard's first frames (its snapshot, then the history charts), then the ticks and pushes."""
        snapshot, history = await database_sync_to_async(self._first_frames)(user)
        subscriber.push_text(snapshot)
        subscriber.push_text(history)
        self.dashboards.add(subscriber)
        await self.hub.attach(subscriber)
        await self.hub.subscribe(GROUP, self.on_message)
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def close(self, subscriber: Subscriber) -> None:
        self.dashboards.discard(subscriber)
        if self.dashboards:
            return
        await self.hub.unsubscribe(GROUP)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    def _first_frames(self, user: Any) -> tuple[str, str]:
        snapshot = json.dumps(live.grid_snapshot(user))
        computed_at, history = self._history
        if time.monotonic() - computed_at >= HISTORY_TTL_S:
            history = json.dumps({"type": "history", "charts": live.history_charts()})
            self._history = (time.monotonic(), history)
        return snapshot, history

    # Pushed messages

    async def on_message(self, message: Message) -> None:
        if message["type"] == "telemetry.grid":
            # Node names and numbers only, no job: every signed-in user may have it.
            text = json.dumps(message)
            for subscriber, _ in await self.hub.signed_in(self.dashboards):
                subscriber.push_text(text)
        elif message["type"] == "grid.changed":
            live.shared_grid.changed()
            self._wake.set()

    # Ticks

    async def _tick_forever(self) -> None:
        last = -MIN_GAP_S
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=TICK_S)
            self._wake.clear()
            await asyncio.sleep(max(0.0, last + MIN_GAP_S - time.monotonic()))
            last = time.monotonic()
            try:
                await self.tick()
            except Exception:  # the database may be away: the next tick tries again
                log.exception("dashboard tick failed")

    async def tick(self) -> None:
        with_telemetry = self.hub.live_paused or not settings.TELEMETRY_PUSH  # nothing pushes it: read it here
        figures, rows, telemetry = await database_sync_to_async(self._read)(with_telemetry)
        at = timezone.now().isoformat()
        frames: dict[Viewer, str] = {}
        by_content: dict[str, str] = {}
        telemetry_text = json.dumps(telemetry) if telemetry is not None else None
        for subscriber, viewer in await self.hub.signed_in(self.dashboards):
            if viewer not in frames:
                message = live.grid_message(figures, at, live.rows_visible_to(viewer, rows), is_operator(viewer))
                key = json.dumps([message["queue"]["by_team"], message["can_override"]])
                if key not in by_content:
                    by_content[key] = json.dumps(message)
                frames[viewer] = by_content[key]
            subscriber.push_text(frames[viewer])
            if telemetry_text is not None:
                subscriber.push_text(telemetry_text)

    @staticmethod
    def _read(with_telemetry: bool) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
        telemetry = live.shared_telemetry.get() if with_telemetry else None
        return live.shared_grid.get(), live.queue_rows(), telemetry
