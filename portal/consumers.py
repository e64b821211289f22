"""Websocket of the dashboard: the grid's figures every few seconds and on every change."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from portal import live
from portal.models import User

TICK_S = 2.0
MIN_GAP_S = 0.5  # bursts of changes (an admission cycle) coalesce into one message
CLOSE_UNAUTHENTICATED = 4401


class GridConsumer(AsyncJsonWebsocketConsumer):
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

    def _snapshot(self) -> dict[str, Any] | None:
        # Reload the user each time: team membership (what the queue breakdown shows) can change mid-session.
        user = User.objects.filter(pk=self.user.pk, is_active=True).first()
        return live.grid_snapshot(user) if user is not None else None

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            await self._send()

    async def grid_changed(self, event: dict[str, Any]) -> None:
        if asyncio.get_running_loop().time() - getattr(self, "last_sent", 0.0) >= MIN_GAP_S:
            await self._send()
