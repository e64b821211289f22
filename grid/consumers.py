"""Websocket of the dashboard: the grid's figures every few seconds and on every change, and GPU telemetry.

The consumer only opens and closes the page and answers what the page asks (an operator's
override); what the page is sent comes from the process's dashboard feed (grid.feeds), which
computes it once for all the process's dashboards. GPU telemetry reaches the page in one of two
ways: pushed by the telemetry cycle to the `grid` group (TELEMETRY_PUSH, with a shared channel
layer), or read by the feed at each tick. After every (re)connect the page gets the history
charts again, so a gap is backfilled.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from cluster import guard
from grid.feeds import GridFeed
from portal.access import websocket_user
from portal.fanout import CLOSE_UNAUTHENTICATED, LiveConsumer


class GridConsumer(LiveConsumer):
    feed: GridFeed | None = None

    async def connect(self) -> None:
        user = await self.signed_in_user()
        if user is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        await self.accept()
        self.feed = self.hub.feed(GridFeed)
        await self.feed.open(self.subscriber, user)

    async def left(self) -> None:
        if self.feed is not None:
            await self.feed.close(self.subscriber)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "override":
            await self.send_json(await database_sync_to_async(self._override)(content))

    def _override(self, content: dict[str, Any]) -> dict[str, Any]:
        """An operator takes a node back from the thermal guard; the guard checks the role and records it."""
        user = websocket_user(self.scope)
        if user is None:
            return {"type": "override.result", "ok": False, "error": "signed out"}
        try:
            guard.override(str(content.get("node", "")), user, str(content.get("reason", ""))[:200])
        except guard.GuardError as exc:
            return {"type": "override.result", "ok": False, "error": str(exc)}
        return {"type": "override.result", "ok": True, "node": content.get("node")}
