"""Which channel-layer groups someone listens to now, so a publisher can skip the groups nobody reads.

A process's live pages join a group once (portal.fanout.Hub); the hub records the group here under
its own token when it joins, renews its entries every RENEW_S and removes them when it leaves.
A process that dies without leaving drops out when its entries expire (TTL_S).

The record lives in the cache: on Redis whenever the channel layer is (both follow REDIS_URL), in
the process's memory otherwise, like the in-memory channel layer. One key per group holds
{token: expires_at}, so a publisher reads every group it is about to send to in one `get_many`.
Two processes joining the same group at the same moment may overwrite each other's entry; the
next renewal puts it back.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from django.core.cache import cache

TTL_S = 120.0
RENEW_S = 30.0
PREFIX = "listeners:"

Entries = dict[str, float]


def _key(group: str) -> str:
    return PREFIX + group


def join(token: str, groups: Iterable[str], now: float | None = None) -> None:
    """Record (or renew) that `token` listens to these groups."""
    now = time.time() if now is None else now
    keys = [_key(g) for g in groups]
    if not keys:
        return
    current: dict[str, Entries] = cache.get_many(keys)
    updated = {key: {**_live(current.get(key), now), token: now + TTL_S} for key in keys}
    cache.set_many(updated, timeout=TTL_S)


def leave(token: str, groups: Iterable[str], now: float | None = None) -> None:
    """`token` no longer listens to these groups; a group left with no listener is forgotten."""
    now = time.time() if now is None else now
    keys = [_key(g) for g in groups]
    if not keys:
        return
    current: dict[str, Entries] = cache.get_many(keys)
    remaining = {key: {t: e for t, e in _live(current.get(key), now).items() if t != token} for key in keys}
    cache.set_many({key: entries for key, entries in remaining.items() if entries}, timeout=TTL_S)
    cache.delete_many([key for key, entries in remaining.items() if not entries])


def listened(groups: Iterable[str], now: float | None = None) -> set[str]:
    """The groups among these that have at least one listener whose entry has not expired."""
    now = time.time() if now is None else now
    wanted = list(groups)
    found: dict[str, Entries] = cache.get_many([_key(g) for g in wanted])
    return {g for g in wanted if _live(found.get(_key(g)), now)}


def _live(entries: Entries | None, now: float) -> Entries:
    return {t: e for t, e in (entries or {}).items() if e > now}
