"""Live pages at scale: each process subscribes once per group and writes one encoded frame to many sockets.

Channels gives every socket a channel of its own: a group message is copied to each socket's
consumer, which takes a thread hop (Channels 4.2+ closes stale database connections before every
handler) and encodes the JSON again, per socket and per message. With a thousand dashboards in a
process one push a second made a thousand hops and encodings a second. Here instead:

- a process joins each group once (`Hub.subscribe`: the first local page that needs a group
  subscribes, the last one to go unsubscribes), through the same channel layer, so a Redis outage
  is ridden out as before (portal.channel_layer: pushes dropped, groups re-joined on recovery);
- a feed (grid.feeds for dashboards, jobs.feeds for job pages) turns each message, or each tick
  of what its pages show, into text once and hands it to every local socket's `Subscriber.push`,
  which writes it straight into the server's send, in order, never waiting on a slow client;
- every message is still checked per socket (`Hub.signed_in`, then the feed's rule check): the
  session must stand, the user must be active and allowed to see what the message is about,
  against facts the process caches (portal.viewers) and reloads every REFRESH_S and as soon as a
  change is announced (`announce_access_change`, to every process through the `access` group).

The hub also tells each page when pushes pause and resume (Redis down and back) and closes the
sockets whose session has ended (4401).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.db import transaction

from portal import listeners
from portal.access import websocket_user
from portal.broadcast import send_now
from portal.channel_layer import live_updates_paused
from portal.models import User, hash_token
from portal.viewers import Viewer, Viewers, token_standing_key

log = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_SLOW = 1013  # "try again later": the page reconnects and starts from a fresh snapshot
ACCESS_GROUP = "access"
HOUSEKEEPING_S = 1.0
# channels_redis drops group members older than its group_expiry (a day): a process's long-lived
# subscriptions are renewed well before that.
RENEW_GROUPS_S = 3600.0

Message = dict[str, Any]
Send = Callable[[Message], Coroutine[Any, Any, None]]
Handler = Callable[[Message], Awaitable[None]]


# --- one socket ----------------------------------------------------------------------------------


class Subscriber:
    """One open websocket, written to in order straight into the server's send.

    A write normally completes at once (the server buffers it). Only when the server makes it wait
    (a client that does not read: its buffer is full) does the rest go through a task of its own,
    so one slow page never holds up the others; past MAX_BACKLOG waiting frames it is closed.
    """

    MAX_BACKLOG = 64

    def __init__(self, send: Send, scope: dict[str, Any]) -> None:
        self._send = send
        self.scope = scope
        self.user_id = 0
        self.session_key: str | None = None
        self.auth_hash = ""
        self.live_paused = False
        self.closed = False
        self._backlog: deque[Message] = deque()
        self._writer: asyncio.Task[None] | None = None

    def identify(self, user: User) -> None:
        """The user this socket speaks for, as verified when it opened."""
        session = self.scope.get("session")
        token = self.scope.get("api_token_header")
        self.user_id = user.pk
        if token is not None:  # opened with an API token (portal.security.TokenWebsocket): it stands while the token does
            self.session_key = token_standing_key(hash_token(token.split()[-1]))
        else:
            self.session_key = session.session_key if session is not None else None
        self.auth_hash = user.get_session_auth_hash()

    def push(self, message: Message) -> None:
        if self.closed:
            return
        if message["type"] == "websocket.close":
            self.closed = True
        if self._writer is not None:
            if len(self._backlog) < self.MAX_BACKLOG:
                self._backlog.append(message)
            elif not self.closed:
                self.closed = True
                self._backlog.append({"type": "websocket.close", "code": CLOSE_TOO_SLOW})
            return
        write = self._send(message)
        try:
            waiting = write.send(None)  # the write runs now, up to the point where it would wait
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - the client went away: nothing more for it
            self._gone(exc)
            return
        self._writer = asyncio.get_running_loop().create_task(self._finish(write, waiting))

    def push_text(self, text: str) -> None:
        self.push({"type": "websocket.send", "text": text})

    def close(self, code: int) -> None:
        self.push({"type": "websocket.close", "code": code})

    async def _finish(self, write: Coroutine[Any, Any, None], waiting: Any) -> None:
        try:
            await _resume(write, waiting)
            while self._backlog:
                await self._send(self._backlog.popleft())
        except Exception as exc:  # noqa: BLE001
            self._gone(exc)
        finally:
            self._writer = None

    def _gone(self, exc: BaseException) -> None:
        log.debug("websocket write failed, dropping the socket's frames: %s: %s", type(exc).__name__, exc)
        self.closed = True
        self._backlog.clear()


async def _resume(coro: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Drive a coroutine that was stepped by hand (`coro.send(None)`) and is waiting on `waiting`
    to its end, as a task would have."""
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)  # a bare yield: it only asked to be scheduled again
            else:
                await asyncio.wait([waiting])
        except asyncio.CancelledError:
            coro.close()
            raise
        try:
            waiting = coro.send(None)
        except StopIteration:
            return


# --- the process's hub ------------------------------------------------------------------------------


class Hub:
    """This process's (this event loop's) subscriptions, sockets, cached viewers and live status."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.viewers = Viewers()
        self.subscribers: set[Subscriber] = set()
        self.feeds: dict[type[Any], Any] = {}
        self.live_paused = False
        self._groups: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self._housekeeper: asyncio.Task[None] | None = None
        self._renewed_at = time.monotonic()
        # Publishers skip groups nobody listens to (portal.listeners): this hub's entries there.
        self.token = uuid.uuid4().hex
        self._listed_at = time.monotonic()
        self._recording: set[asyncio.Task[None]] = set()

    def feed(self, kind: type[Any]) -> Any:
        """The process's one feed of this kind (created on first use)."""
        if kind not in self.feeds:
            self.feeds[kind] = kind(self)
        return self.feeds[kind]

    # Sockets

    async def attach(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)
        if self._housekeeper is None:
            self._housekeeper = asyncio.get_running_loop().create_task(self._housekeep())
            await self.subscribe(ACCESS_GROUP, self._access_changed)

    async def detach(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        if self.subscribers or self._housekeeper is None:
            return
        # The process's last page is gone: leave every group and rest until the next one comes.
        housekeeper, self._housekeeper = self._housekeeper, None
        housekeeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await housekeeper
        for group in list(self._groups):
            await self.unsubscribe(group)

    # Groups: one channel of the process per group, whatever the number of local pages

    async def subscribe(self, group: str, handler: Handler) -> None:
        if group in self._groups or self.layer is None:
            return
        channel = await self.layer.new_channel(prefix="fanout")
        self._groups[group] = (channel, asyncio.get_running_loop().create_task(self._receive(channel, handler)))
        await self.layer.group_add(group, channel)
        self._record(listeners.join, [group])

    async def unsubscribe(self, group: str) -> None:
        entry = self._groups.pop(group, None)
        if entry is None or self.layer is None:
            return
        channel, receiver = entry
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver
        await self.layer.group_discard(group, channel)
        self._record(listeners.leave, [group])

    async def _receive(self, channel: str, handler: Handler) -> None:
        assert self.layer is not None
        while True:
            message = await self.layer.receive(channel)
            try:
                await handler(message)
            except Exception:  # a bad message must not end the subscription
                log.exception("live feed failed on a %s message", message.get("type"))

    # The check on every message: is the socket's session still signed in?

    async def signed_in(self, subscribers: Iterable[Subscriber]) -> list[tuple[Subscriber, Viewer]]:
        """The subscribers still signed in, each with its viewer; the others are closed with 4401.

        Reads the cached facts, loading them first (one thread hop for all) when they are stale.
        """
        candidates = [s for s in subscribers if not s.closed]
        await self.fresh_viewers(candidates)
        admitted: list[tuple[Subscriber, Viewer]] = []
        rehash: list[Subscriber] = []
        for subscriber in candidates:
            viewer = self.viewers.by_user.get(subscriber.user_id)
            standing = subscriber.session_key is None or subscriber.session_key in self.viewers.sessions
            if viewer is None or not viewer.is_active or not standing:
                subscriber.close(CLOSE_UNAUTHENTICATED)
            elif viewer.auth_hash != subscriber.auth_hash:
                rehash.append(subscriber)  # the password changed: only the session that changed it stays signed in
            else:
                admitted.append((subscriber, viewer))
        for subscriber in rehash:
            user = await database_sync_to_async(websocket_user)(subscriber.scope)
            viewer = self.viewers.by_user.get(subscriber.user_id)
            if user is None or viewer is None or user.get_session_auth_hash() != viewer.auth_hash:
                subscriber.close(CLOSE_UNAUTHENTICATED)
            else:
                subscriber.auth_hash = viewer.auth_hash
                admitted.append((subscriber, viewer))
        return admitted

    async def fresh_viewers(self, subscribers: list[Subscriber]) -> None:
        users = {s.user_id for s in subscribers}
        sessions = {s.session_key for s in subscribers if s.session_key is not None}
        if self.viewers.due(users, sessions):
            # Load for every socket of the process, not only these: one load serves all feeds.
            users |= {s.user_id for s in self.subscribers}
            sessions |= {s.session_key for s in self.subscribers if s.session_key is not None}
            await database_sync_to_async(self.viewers.load)(users, sessions)

    async def _access_changed(self, message: Message) -> None:
        """Another process (or this one) announced a change: check every page now, not at its next message."""
        self.viewers.forget(message.get("users", ()), message.get("sessions", ()))
        await self.signed_in(list(self.subscribers))
        for feed in list(self.feeds.values()):
            recheck = getattr(feed, "recheck", None)
            if recheck is not None:
                await recheck()

    # Housekeeping: sessions that ended, live status, group renewal

    async def _housekeep(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            try:
                await self.signed_in(list(self.subscribers))
                await self._report_live_status()
                await self._renew_groups()
                await self._renew_listeners()
            except Exception:  # the database may be away; the next round tries again
                log.exception("live pages' housekeeping failed")

    async def _report_live_status(self) -> None:
        recover = getattr(self.layer, "recover", None)
        if recover is not None:
            await recover()
        self.live_paused = paused = live_updates_paused()
        text = json.dumps({"type": "live", "paused": paused})
        for subscriber in list(self.subscribers):
            if subscriber.live_paused != paused:
                subscriber.live_paused = paused
                subscriber.push_text(text)

    async def _renew_groups(self) -> None:
        if self.layer is None or time.monotonic() - self._renewed_at < RENEW_GROUPS_S:
            return
        self._renewed_at = time.monotonic()
        for group, (channel, _) in list(self._groups.items()):
            await self.layer.group_add(group, channel)

    async def _renew_listeners(self) -> None:
        if time.monotonic() - self._listed_at < listeners.RENEW_S:
            return
        self._listed_at = time.monotonic()
        self._record(listeners.join, list(self._groups))

    def _record(self, change: Callable[[str, list[str]], None], groups: list[str]) -> None:
        """Update this hub's entries in portal.listeners in a thread of its own: the cache may be Redis,
        with a socket timeout, and a page's subscription must not wait for it."""

        async def record() -> None:
            try:
                await sync_to_async(change, thread_sensitive=False)(self.token, groups)
            except Exception:  # the next renewal tries again
                log.exception("could not record the live pages' groups")

        task = asyncio.get_running_loop().create_task(record())
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def hub() -> Hub:
    """The hub of the running event loop (one per server process)."""
    loop = asyncio.get_running_loop()
    with _registry_lock:
        if loop not in _hubs:
            _hubs[loop] = Hub()
        return _hubs[loop]


def announce_access_change(users: Iterable[int] = (), sessions: Iterable[str] = ()) -> None:
    """Once the current transaction commits, make every process check these users' and sessions'
    sockets again: at once in this process, through the `access` group in the others."""
    message: Message = {"type": "access.changed", "users": sorted(set(users)), "sessions": sorted(set(sessions))}

    def tell() -> None:
        with _registry_lock:
            local = list(_hubs.values())
        for each in local:
            each.viewers.forget(message["users"], message["sessions"])
        send_now(ACCESS_GROUP, message)

    transaction.on_commit(tell, robust=True)


# What changes who may see what: a membership, a user's password, roles or deactivation, a sign-out.
USER_FIELDS_THAT_MATTER = {"password", "is_active", "is_operator", "is_superuser", "is_finance"}


def _membership_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    announce_access_change(users=[instance.user_id])


def _user_saved(sender: Any, instance: Any, update_fields: Iterable[str] | None = None, **kwargs: Any) -> None:
    if update_fields is None or USER_FIELDS_THAT_MATTER & set(update_fields):  # not a sign-in's last_login
        announce_access_change(users=[instance.pk])


def _signed_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    announce_access_change(users=[user.pk] if user is not None else [], sessions=[session_key] if session_key else [])


def _tokens_revoked(sender: Any, key_hashes: Iterable[str], **kwargs: Any) -> None:
    announce_access_change(sessions=[token_standing_key(h) for h in key_hashes])


def connect_announcements() -> None:
    """Announce every change of access to the live pages (called from PortalConfig.ready)."""
    from django.contrib.auth.signals import user_logged_out
    from django.db.models.signals import post_delete, post_save

    from portal.models import Membership
    from portal.tokens import tokens_revoked

    post_save.connect(_membership_changed, sender=Membership, dispatch_uid="fanout-membership-saved")
    post_delete.connect(_membership_changed, sender=Membership, dispatch_uid="fanout-membership-deleted")
    post_save.connect(_user_saved, sender=User, dispatch_uid="fanout-user-saved")
    user_logged_out.connect(_signed_out, dispatch_uid="fanout-signed-out")
    tokens_revoked.connect(_tokens_revoked, dispatch_uid="fanout-tokens-revoked")


# --- the consumers' base ----------------------------------------------------------------------------


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """A live page's websocket. Its writes go through its `Subscriber` (so the process's feeds and
    the consumer itself write in one order); it has no channel of its own: group messages reach it
    through the process's feeds."""

    channel_layer_alias = "live pages have no channel of their own"  # names no layer: get_channel_layer gives None
    subscriber: Subscriber

    async def websocket_connect(self, message: Message) -> None:
        self.subscriber = Subscriber(self.base_send, self.scope)
        self.hub = hub()
        await super().websocket_connect(message)

    async def websocket_disconnect(self, message: Message) -> None:
        self.subscriber.closed = True
        await self.left()
        if self.subscriber in self.hub.subscribers:
            await self.hub.detach(self.subscriber)
        await super().websocket_disconnect(message)

    async def left(self) -> None:
        """Leave the feed the page joined (subclasses)."""

    async def send(self, message: Message) -> None:  # channels' AsyncConsumer.send
        self.subscriber.push(message)

    async def send_json(self, content: Any, close: bool = False) -> None:
        self.subscriber.push_text(json.dumps(content))
        if close:
            await self.close()

    async def signed_in_user(self) -> User | None:
        """The user behind the socket, verified against its session now; None once signed out."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return None
        current: User | None = await database_sync_to_async(websocket_user)(self.scope)
        if current is not None:
            self.subscriber.identify(current)
        return current

    async def join(self) -> None:
        """Count the socket among the process's live pages (after its first frames were pushed)."""
        await self.hub.attach(self.subscriber)
