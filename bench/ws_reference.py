"""The bare reference for bench/ws_fanout.py: Channels as its documentation builds a live page, nothing else.

One consumer per socket that joins the page's group (`grid`, or `job.<id>` on a job page),
accepts, sends a first frame so the client counts the page as loaded, and forwards every push
(the heat map as it comes, a job's samples as the job page's `gpus` frame). No sign-in, no
database, no visibility check, no ticks: what the portal's live pages cost beyond this is the
portal's own.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()  # sets Django up (the portal's settings, its Redis channel layer)

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class BareConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]  # Channels is untyped
    group = "grid"

    async def connect(self) -> None:
        job_id = self.scope["url_route"]["kwargs"].get("job_id")
        self.group = f"job.{job_id}" if job_id else "grid"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        first = {"type": "snapshot", "job": {"id": job_id}} if job_id else {"type": "history"}
        await self.send(text_data=json.dumps(first))

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def telemetry_grid(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(event))

    async def telemetry_job(self, event: dict[str, Any]) -> None:
        await self.send(
            text_data=json.dumps({"type": "gpus", "t": event["t"], "stale": event["stale"], "values": event["values"]})
        )


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([path("ws/grid/", BareConsumer.as_asgi()), path("ws/jobs/<int:job_id>/", BareConsumer.as_asgi())]),
    }
)
