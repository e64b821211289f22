"""Websocket of a job page: a snapshot on connect (and after every reconnect or resync), then a tick a second.

The consumer opens and closes the page and answers a resync; the ticks, pushed changes and GPU
samples come from the process's job feed (jobs.feeds), which reads each watched job once per tick
for all the pages watching it.
"""

from __future__ import annotations

from typing import Any

from jobs.feeds import JobFeed, JobPage
from portal.fanout import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED, LiveConsumer


class JobConsumer(LiveConsumer):
    page: JobPage | None = None

    async def connect(self) -> None:
        user = await self.signed_in_user()
        if user is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        feed: JobFeed = self.hub.feed(JobFeed)
        page = JobPage(self.subscriber, int(self.scope["url_route"]["kwargs"]["job_id"]))
        snapshot = await feed.snapshot(page, user)
        if snapshot is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.accept()
        self.page = page
        await feed.open(page, snapshot)

    async def left(self) -> None:
        if self.page is not None:
            await self.hub.feed(JobFeed).close(self.page)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if self.page is None or not (isinstance(content, dict) and content.get("type") == "resync"):
            return
        user = await self.signed_in_user()
        if user is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        snapshot = await self.hub.feed(JobFeed).snapshot(self.page, user)
        if snapshot is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.subscriber.push_text(snapshot)
