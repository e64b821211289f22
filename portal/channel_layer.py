"""The Redis channel layer, made to ride out a Redis outage instead of closing every websocket.

While Redis is unreachable, pushes (`group_send`, `send`) are dropped, joins are remembered and
`receive` waits and retries; the live pages keep being served from their feeds' database ticks.
When Redis answers again every remembered group membership
is re-joined (a restarted Redis has forgotten them), so pushes resume on the open sockets. The
live pages' fan-out (portal.fanout) tells them "live updates paused" and "resumed".
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

import redis
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer

from portal.breaker import Breaker

log = logging.getLogger(__name__)
REDIS_ERRORS = (redis.RedisError, OSError)
RETRY_S = 1.0
# A process's fan-out channels (portal.fanout) carry every group message for all of its pages; a
# burst (a telemetry cycle pushes to every watched job at once) must not overflow them. channels_redis
# keeps one Redis list per process, sized by the first channel it serves.
FANOUT_CAPACITY = 5000


class ResilientRedisChannelLayer(RedisChannelLayer):
    """channels_redis with an outage mode: drop pushes, keep sockets open, re-join groups on recovery."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["channel_capacity"] = {"fanout.*": FANOUT_CAPACITY, **(kwargs.get("channel_capacity") or {})}
        super().__init__(*args, **kwargs)
        self.breaker = Breaker("redis channel layer", cooldown_s=RETRY_S)
        self.memberships: dict[str, set[str]] = defaultdict(set)  # channel -> groups it joined
        self._recovering: asyncio.Lock | None = None

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self._guarded("send", channel, message)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self._guarded("group_send", group, message)

    async def group_add(self, group: str, channel: str) -> None:
        self.memberships[channel].add(group)
        await self._guarded("group_add", group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        groups = self.memberships.get(channel)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self.memberships[channel]
        await self._guarded("group_discard", group, channel)

    async def _guarded(self, name: str, *args: Any) -> None:
        if self.breaker.is_open:
            return  # dropped: the pages poll on their own meanwhile
        try:
            await getattr(super(), name)(*args)
        except REDIS_ERRORS as exc:
            self.breaker.failed(exc)
        else:
            if self.breaker.is_down:
                await self._rejoin()

    async def receive(self, channel: str) -> dict[str, Any]:
        """The next message for `channel`; through an outage it waits rather than raising."""
        while True:
            try:
                message: dict[str, Any] = await super().receive(channel)
            except redis.TimeoutError:
                # The blocking pop's read timed out as its own timeout ran out: nothing arrived. Not an
                # outage; poll again (the next call takes a fresh connection).
                continue
            except REDIS_ERRORS as exc:
                self.breaker.failed(exc)
                await asyncio.sleep(RETRY_S)
                await self._rejoin()
            else:
                await self.recover()  # a message got through: Redis answers, so stop dropping pushes
                return message

    async def recover(self) -> bool:
        """If an outage is believed, and its cool-down has passed, try Redis again (re-joining the groups).

        The process's fan-out (portal.fanout) calls it every second: a subscription whose receive
        never failed (its connection survived, or no message was due) would otherwise never notice
        that Redis is back. True
        if the layer is up.
        """
        if self.breaker.is_down and not self.breaker.is_open:
            await self._rejoin()
        return not self.breaker.is_down

    async def _rejoin(self) -> None:
        """Re-join every remembered group once Redis answers; one coroutine does it, the others wait."""
        if self._recovering is None:
            self._recovering = asyncio.Lock()
        async with self._recovering:
            if not self.breaker.is_down:
                return
            try:
                # A restarted Redis has forgotten the groups; joining again is harmless if it has not.
                for channel, groups in list(self.memberships.items()):
                    for group in list(groups):
                        await RedisChannelLayer.group_add(self, group, channel)
                await self.connection(0).ping()  # with no memberships, still prove Redis answers
            except REDIS_ERRORS as exc:
                self.breaker.failed(exc)
                return
            log.warning("re-joined %d websocket channels to their groups", len(self.memberships))
            self.breaker.succeeded()


def live_updates_paused() -> bool:
    """True while pushes to the pages are being dropped (the channel layer cannot reach Redis)."""
    breaker = getattr(get_channel_layer(), "breaker", None)
    return bool(breaker is not None and breaker.is_down)
