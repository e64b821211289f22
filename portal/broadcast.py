"""Send to websocket groups once the current transaction commits (never for rolled-back work).

A push is a courtesy: the pages also poll on their own, so a send that fails (Redis down) is
logged and dropped, never raised into the request or task whose work is already saved.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)


def send_now(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception as exc:  # noqa: BLE001 - a lost push must never fail saved work
        log.warning("push to %s dropped: %s: %s", group, type(exc).__name__, exc)


def send_on_commit(group: str, message: dict[str, Any]) -> None:
    def push() -> None:
        send_now(group, message)

    push.__qualname__ = f"push to {group}"
    transaction.on_commit(push, robust=True)
