"""Websocket of the dashboard: the grid's figures every few seconds and on every change, and GPU telemetry.

GPU telemetry reaches the page in one of two ways: pushed by the telemetry cycle to the `grid`
group (TELEMETRY_PUSH, with a shared channel layer), or read by this socket at each tick.
After every (re)connect the page gets the history charts again, so a gap is backfilled.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from cluster import guard
from grid import live
from portal.access import websocket_user
from portal.channel_layer import ReportsLiveStatus
from portal.models import User

TICK_S = 2.0
MIN_GAP_S = 0.5  # bursts of changes (an admission cycle) coalesce into one message
CLOSE_UNAUTHENTICATED = 4401


class GridConsumer(ReportsLiveStatus, AsyncJsonWebsocketConsumer):
    ticker: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user = user
        await self.accept()
        await self.channel_layer.group_add("grid", self.channel_name)
        await self._send()
        await self.send_json({"type": "history", "charts": await database_sync_to_async(live.history_charts)()})
        self.ticker = asyncio.create_task(self._tick_forever())

    async def disconnect(self, code: int) -> None:
        if self.ticker is not None:
            self.ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.ticker
        await self.channel_layer.group_discard("grid", self.channel_name)

    async def _send(self) -> None:
        self.last_sent = asyncio.get_running_loop().time()
        message = await database_sync_to_async(self._snapshot)()
        if message is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        await self.send_json(message)

    def _current_user(self) -> User | None:
        # Reload the user each time: team membership (what the queue breakdown shows) can change mid-session.
        return websocket_user(self.scope)

    def _snapshot(self) -> dict[str, Any] | None:
        user = self._current_user()
        return live.grid_snapshot(user) if user is not None else None

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            await self._send()
            paused = await self.report_live_status()
            if paused or not settings.TELEMETRY_PUSH:  # nothing is pushed while paused: read it here
                await self.send_json(await database_sync_to_async(live.shared_telemetry.get)())

    async def grid_changed(self, event: dict[str, Any]) -> None:
        live.shared_grid.changed()
        if asyncio.get_running_loop().time() - getattr(self, "last_sent", 0.0) >= MIN_GAP_S:
            await self._send()

    async def telemetry_grid(self, event: dict[str, Any]) -> None:
        """The cycle's heat map: node names and numbers only, no job, so every signed-in user may have it."""
        await self.send_json(event)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "override":
            await self.send_json(await database_sync_to_async(self._override)(content))

    def _override(self, content: dict[str, Any]) -> dict[str, Any]:
        """An operator takes a node back from the thermal guard; the guard checks the role and records it."""
        user = self._current_user()
        if user is None:
            return {"type": "override.result", "ok": False, "error": "signed out"}
        try:
            guard.override(str(content.get("node", "")), user, str(content.get("reason", ""))[:200])
        except guard.GuardError as exc:
            return {"type": "override.result", "ok": False, "error": str(exc)}
        return {"type": "override.result", "ok": True, "node": content.get("node")}
