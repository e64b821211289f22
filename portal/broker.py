"""The Celery broker transport: kombu's Redis transport, made to survive losing Redis mid-task.

kombu 5.7's Redis channel, on closing after a lost connection, disconnects its pools and then
tries to put the messages its worker had not yet acknowledged back on the queue (tasks are acked
late). With the connection already closed that raises AttributeError, Celery calls it an
unrecoverable error and the worker process exits: the grid stops admitting until someone
restarts it. Nothing can be put back on a broker that is gone; those messages wait in Redis's
unacked set and kombu restores them after the visibility timeout (or, after a restart without
persistence, they are gone and the periodic cycles and the reaper redo their work). So the
restore and the ack are skipped, with a warning, when the connection is already closed.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


def _closed(qos: kombu_redis.QoS) -> bool:
    """True once the channel's connection is closed (kombu sets its parts to None then)."""
    transport = getattr(qos.channel, "connection", None)
    return transport is None or getattr(transport, "client", None) is None


class QoS(kombu_redis.QoS):
    """Restores and acks that find the connection closed are skipped instead of killing the worker."""

    def restore_unacked(self, client: Any = None) -> Any:
        if client is None and _closed(self):
            log.warning(
                "broker connection closed: %d unacknowledged messages left to the visibility timeout", len(self._delivered)
            )
            self._delivered.clear()
            return None
        try:
            return super().restore_unacked(client)
        except (redis.RedisError, OSError) as exc:
            log.warning("could not restore %d unacknowledged messages: %s", len(self._delivered), exc)
            self._delivered.clear()
            return None

    def ack(self, delivery_tag: Any) -> None:
        # A task that finishes after its channel closed (the broker went away meanwhile) cannot be
        # acked on it; Redis restores the message after the visibility timeout, or has forgotten it.
        if _closed(self):
            log.warning("broker connection closed: the ack of a finished task is left to the visibility timeout")
            return
        try:
            super().ack(delivery_tag)
        except AttributeError:  # closed while acking
            log.warning("broker connection closed while acking a finished task")


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
