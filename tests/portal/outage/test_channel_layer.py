"""The channel layer through a Redis outage: pushes dropped, sockets kept, groups re-joined after."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from portal.channel_layer import ResilientRedisChannelLayer

DOWN = "redis://127.0.0.1:1/0"


async def test_while_redis_is_down_nothing_raises_and_receive_waits() -> None:
    layer = ResilientRedisChannelLayer(hosts=[DOWN])
    channel = await layer.new_channel()
    await layer.group_add("grid", channel)
    await layer.group_send("grid", {"type": "grid.changed"})
    await layer.send(channel, {"type": "x"})
    assert layer.breaker.is_down and layer.memberships == {channel: {"grid"}}
    with pytest.raises(TimeoutError):  # waits for Redis instead of raising into the consumer
        await asyncio.wait_for(layer.receive(channel), timeout=1.5)
    await layer.group_discard("grid", channel)
    assert layer.memberships == {}


@pytest.mark.redis
async def test_after_a_restart_that_forgot_the_groups_the_sockets_are_joined_again(redis_url_or_skip: str) -> None:
    layer = ResilientRedisChannelLayer(hosts=[redis_url_or_skip], prefix=f"outage-test-{id(object())}")
    channel = await layer.new_channel()
    await layer.group_add("grid", channel)
    redis.Redis.from_url(redis_url_or_skip).flushdb()  # what a restart without persistence leaves
    layer.breaker.failed(ConnectionError("Connection closed by server."))  # the receive loop saw it go
    layer.breaker._retry_at = 0.0  # and its cool-down has passed

    await layer._rejoin()
    assert not layer.breaker.is_down
    await layer.group_send("grid", {"type": "grid.changed", "n": 1})
    message: dict[str, Any] = await asyncio.wait_for(layer.receive(channel), timeout=5)
    assert message == {"type": "grid.changed", "n": 1}
    await layer.group_discard("grid", channel)
    await layer.flush()


@pytest.mark.redis
async def test_a_layer_that_believes_redis_down_tries_again_on_the_next_tick_after_its_cool_down(redis_url_or_skip: str) -> None:
    """A socket whose own receive never failed must still notice that Redis is back (the consumers' ticks call recover)."""
    layer = ResilientRedisChannelLayer(hosts=[redis_url_or_skip], prefix=f"outage-tick-{id(object())}")
    channel = await layer.new_channel()
    await layer.group_add("grid", channel)
    redis.Redis.from_url(redis_url_or_skip).flushdb()
    layer.breaker.failed(ConnectionError("a push failed"))
    assert await layer.recover() is False  # still cooling down: no new attempt yet
    layer.breaker._retry_at = 0.0
    assert await layer.recover() is True
    await layer.group_send("grid", {"type": "grid.changed", "n": 2})
    assert await asyncio.wait_for(layer.receive(channel), timeout=5) == {"type": "grid.changed", "n": 2}
    await layer.flush()
