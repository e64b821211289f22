"""Cross-process mutual exclusion held for the length of a transaction.

PostgreSQL: a transaction-scoped advisory lock. SQLite: transactions already start IMMEDIATE
(see settings), which takes the database's single write lock, so nothing more is needed.
"""

from __future__ import annotations

import zlib

from django.db import connection


def transaction_lock(name: str) -> None:
    """Block until this transaction holds the lock called `name`; call inside `atomic()`."""
    if connection.vendor == "postgresql":
        key = zlib.crc32(name.encode()) - 2**31
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
    elif not connection.in_atomic_block:
        raise RuntimeError("transaction_lock() must be called inside transaction.atomic()")
