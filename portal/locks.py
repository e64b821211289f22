"""Cross-process mutual exclusion held for the length of a transaction.

PostgreSQL: a transaction-scoped advisory lock. SQLite: transactions already start IMMEDIATE
(see settings), which takes the database's single write lock, so nothing more is needed.
"""

from __future__ import annotations

import zlib

from django.db import connection

# PostgreSQL's statement taking the lock; its one parameter is `advisory_key(name)`.
LOCK_SQL = "SELECT pg_advisory_xact_lock(%s)"


def advisory_key(name: str) -> int:
    """The 64-bit key of PostgreSQL's advisory lock called `name`."""
    return zlib.crc32(name.encode()) - 2**31


def transaction_lock(name: str) -> None:
    """Block until this transaction holds the lock called `name`; call inside `atomic()`."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(LOCK_SQL, [advisory_key(name)])
    elif not connection.in_atomic_block:
        raise RuntimeError("transaction_lock() must be called inside transaction.atomic()")
