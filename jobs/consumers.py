"""Websocket of a job page: a snapshot on connect (and after every reconnect), then a tick a second."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from jobs import live
from jobs.models import Job
from portal.access import websocket_user
from portal.channel_layer import ReportsLiveStatus

TICK_S = 1.0
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


class AccessLost(Exception):
    """The user may no longer see the job (left the team, deactivated) or the session ended (signed out)."""

    def __init__(self, code: int = CLOSE_FORBIDDEN) -> None:
        super().__init__(code)
        self.code = code


class JobConsumer(ReportsLiveStatus, AsyncJsonWebsocketConsumer):
    job_id: int
    log_offset = 0
    last_event_id = 0
    ticker: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.job_id = int(self.scope["url_route"]["kwargs"]["job_id"])
        if not await self._visible(user):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.lock = asyncio.Lock()  # the ticker and pushed changes must not interleave offsets
        await self.accept()
        await self.channel_layer.group_add(f"job.{self.job_id}", self.channel_name)
        snapshot = await database_sync_to_async(self._snapshot)()
        await self.send_json(snapshot)
        self.ticker = asyncio.create_task(self._tick_forever())

    async def disconnect(self, code: int) -> None:
        if self.ticker is not None:
            self.ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.ticker
        if hasattr(self, "job_id"):
            await self.channel_layer.group_discard(f"job.{self.job_id}", self.channel_name)

    @database_sync_to_async
    def _visible(self, user: Any) -> bool:
        return Job.objects.visible_to(user).filter(pk=self.job_id).exists()

    def _job(self) -> Job:
        """The job, re-checked against the user's current visibility (membership can change mid-session)."""
        user = websocket_user(self.scope)
        if user is None:
            raise AccessLost(CLOSE_UNAUTHENTICATED)
        job = Job.objects.visible_to(user).filter(pk=self.job_id).first()
        if job is None:
            raise AccessLost
        return job

    def _snapshot(self) -> dict[str, Any]:
        snapshot = live.snapshot(self._job())
        self.log_offset = snapshot["log"]["offset"]
        self.last_event_id = max((e["id"] for e in snapshot["events"]), default=0)
        return snapshot

    def _tick(self) -> dict[str, Any]:
        message = live.tick(self._job(), self.log_offset, self.last_event_id)
        self.log_offset = message["log"]["offset"]
        self.last_event_id = max((e["id"] for e in message["events"]), default=self.last_event_id)
        return message

    async def _send_tick(self) -> None:
        async with self.lock:
            try:
                message = await database_sync_to_async(self._tick)()
            except AccessLost as lost:
                await self.close(code=lost.code)
                return
            await self.send_json(message)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            await self._send_tick()
            await self.report_live_status()

    async def job_changed(self, event: dict[str, Any]) -> None:
        """A state change was committed: tell the page at once rather than at the next tick."""
        await self._send_tick()

    async def telemetry_job(self, event: dict[str, Any]) -> None:
        """The telemetry cycle's samples of this job's GPUs; only sockets that passed the visibility check joined the group."""
        await self.send_json(
            {"type": "gpus", "t": event["t"], "stale": event.get("stale", False), "values": event.get("values", {})}
        )

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "resync":
            async with self.lock:
                try:
                    await self.send_json(await database_sync_to_async(self._snapshot)())
                except AccessLost as lost:
                    await self.close(code=lost.code)
