"""Process-local values that cost queries to build and change rarely, kept for a few seconds.

A `Memo` answers from memory until its time to live runs out or `forget()` is called (model signals
call it when this process changes what it was built from). A change made by another process, or by a
bulk `update()` that sends no signal, is seen at the latest after the time to live.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_memos: list[Memo[Any]] = []


class Memo(Generic[T]):
    def __init__(self, load: Callable[[], T], ttl_s: Callable[[], float]) -> None:
        self._load = load
        self._ttl_s = ttl_s
        self._value: T | None = None
        self._until = 0.0
        self._lock = threading.Lock()
        _memos.append(self)

    def get(self) -> T:
        ttl = self._ttl_s()
        if ttl <= 0:
            return self._load()
        now = time.monotonic()
        with self._lock:
            if self._value is not None and now < self._until:
                return self._value
        value = self._load()
        with self._lock:
            self._value, self._until = value, now + ttl
        return value

    def forget(self, *args: object, **kwargs: object) -> None:
        """Drop the value (usable as a signal receiver)."""
        with self._lock:
            self._value, self._until = None, 0.0


def forget_all() -> None:
    """Drop every memo of this process (tests start each case from the database)."""
    for memo in _memos:
        memo.forget()
