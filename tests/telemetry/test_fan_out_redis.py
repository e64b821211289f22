"""The cycle's fan-out on the Redis channel layer at grid scale: more groups than the Redis pool has connections."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from pytest_django import Settings

from grid import telemetry
from tests.services import redis_reachable, redis_url

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_layer(settings: Settings) -> Any:
    url = redis_url()
    if not redis_reachable(url):
        pytest.skip(f"Redis is not reachable at {url}")
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [url]}}}
    return get_channel_layer()


def test_a_cycle_of_a_thousand_nodes_fans_out_without_exhausting_the_redis_pool(redis_layer: Any) -> None:
    messages = [(f"telemetry.node.fanout-{i}", {"type": "telemetry.node", "node": f"fanout-{i}"}) for i in range(1200)]

    async def listen() -> str:
        channel: str = await redis_layer.new_channel()
        await redis_layer.group_add("telemetry.node.fanout-1199", channel)
        return channel

    channel = async_to_sync(listen)()
    try:
        assert telemetry.fan_out(messages) == 1200
        assert async_to_sync(redis_layer.receive)(channel) == {"type": "telemetry.node", "node": "fanout-1199"}
    finally:
        async_to_sync(redis_layer.group_discard)("telemetry.node.fanout-1199", channel)
