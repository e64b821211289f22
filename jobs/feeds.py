"""The job pages of one process, served from one read per tick for every watched job (portal.fanout).

Every TICK_S, and at once after a change notice (`job.changed`), the feed reads what changed on
every job a page of this process watches (`jobs.live.news`: a few queries however many pages
watch) and sends each page its tick; pages at the same point of the log and timeline share one
encoded frame. The telemetry cycle's samples of a job (`telemetry.job`) are encoded once and
written to the job's pages. Every tick and every sample is checked per page: the session still
stands and the job's own rule (`Job.access_rule`, evaluated in memory) still lets the viewer see
the job; a page that lost the job is closed with 4403, a signed-out one with 4401.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async

from jobs import live
from jobs.models import Job
from portal.fanout import CLOSE_FORBIDDEN, Hub, Message, Subscriber
from portal.permissions import VIEW, Rule, allows
from portal.viewers import Viewer

log = logging.getLogger(__name__)

TICK_S = 1.0
MIN_GAP_S = 0.1  # a burst of change notices (an admission cycle) makes one tick


@dataclass(eq=False)
class JobPage:
    """One job page's socket and how far its log and timeline have got."""

    subscriber: Subscriber
    job_id: int
    log_offset: int = 0
    last_event_id: int = 0
    busy: bool = False  # a snapshot is being made for it: ticks leave it alone meanwhile

    def caught_up(self, snapshot: dict[str, Any]) -> None:
        self.log_offset = snapshot["log"]["offset"]
        self.last_event_id = max((e["id"] for e in snapshot["events"]), default=self.last_event_id)


class JobFeed:
    """This process's job pages."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.pages: dict[int, set[JobPage]] = defaultdict(set)
        self.jobs: dict[int, Job] = {}  # each watched job as last read: what its rule is checked against
        self._ticker: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def snapshot(self, page: JobPage, user: Any) -> str | None:
        """The page's snapshot, encoded, if `user` may see the job (else None)."""
        page.busy = True
        try:
            found = await database_sync_to_async(_snapshot)(page.job_id, user)
        finally:
            page.busy = False
        if found is None:
            return None
        job, snapshot = found
        self.jobs[job.pk] = job
        page.caught_up(snapshot)
        return json.dumps(snapshot)

    async def open(self, page: JobPage, snapshot: str) -> None:
        page.subscriber.push_text(snapshot)
        self.pages[page.job_id].add(page)
        await self.hub.attach(page.subscriber)
        await self.hub.subscribe(f"job.{page.job_id}", functools.partial(self.on_message, page.job_id))
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def close(self, page: JobPage) -> None:
        pages = self.pages.get(page.job_id)
        if pages is None:
            return
        pages.discard(page)
        if not pages:
            del self.pages[page.job_id]
            self.jobs.pop(page.job_id, None)
            await self.hub.unsubscribe(f"job.{page.job_id}")
        if not self.pages and self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    # The check on every message

    async def allowed(self, pages: Iterable[JobPage]) -> list[JobPage]:
        """The pages whose viewer may still see their job; the others are closed (4401 or 4403)."""
        by_subscriber = {p.subscriber: p for p in pages}
        rules: dict[Viewer, Rule] = {}
        admitted = []
        for subscriber, viewer in await self.hub.signed_in(by_subscriber):
            page = by_subscriber[subscriber]
            job = self.jobs.get(page.job_id)
            if viewer not in rules:
                rules[viewer] = Job.access_rule(viewer, VIEW)
            if job is None or not allows(rules[viewer], job):
                subscriber.close(CLOSE_FORBIDDEN)
            else:
                admitted.append(page)
        return admitted

    async def recheck(self) -> None:
        """A change of access was announced: close the pages that lost their job now."""
        await self.allowed([page for pages in self.pages.values() for page in pages])

    # Pushed messages

    async def on_message(self, job_id: int, message: Message) -> None:
        if message["type"] == "telemetry.job":
            sample = {
                "type": "gpus",
                "t": message["t"],
                "stale": message.get("stale", False),
                "values": message.get("values", {}),
            }
            text = json.dumps(sample)
            for page in await self.allowed(self.pages.get(job_id, ())):
                page.subscriber.push_text(text)
        elif message["type"] == "job.changed":
            self._wake.set()  # tell the pages at once rather than at the next tick

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
                log.exception("job pages' tick failed")

    async def tick(self) -> None:
        ready = {job_id: [p for p in pages if not p.busy and not p.subscriber.closed] for job_id, pages in self.pages.items()}
        where = {page: (page.log_offset, page.last_event_id) for pages in ready.values() for page in pages}
        since = {
            job_id: (min(where[p][0] for p in pages), min(where[p][1] for p in pages)) for job_id, pages in ready.items() if pages
        }
        if not since:
            return
        news = await database_sync_to_async(live.news)(since)
        for job_id in since:
            found = news.get(job_id)
            if found is None:
                self.jobs.pop(job_id, None)  # deleted: its pages are closed below, like a job they may not see
            else:
                self.jobs[job_id] = found.job
            frames: dict[tuple[int, int], tuple[str, int, int]] = {}
            for page in await self.allowed(ready[job_id]):
                if found is None or page.busy or (page.log_offset, page.last_event_id) != where[page]:
                    continue  # a snapshot was sent meanwhile: the next tick continues from it
                if where[page] not in frames:
                    tick = found.tick(*where[page])
                    last_event = max((e["id"] for e in tick["events"]), default=where[page][1])
                    frames[where[page]] = (json.dumps(tick), tick["log"]["offset"], last_event)
                text, page.log_offset, page.last_event_id = frames[where[page]]
                page.subscriber.push_text(text)


def _snapshot(job_id: int, user: Any) -> tuple[Job, dict[str, Any]] | None:
    job = Job.objects.visible_to(user).filter(pk=job_id).first()
    return (job, live.snapshot(job)) if job is not None else None
