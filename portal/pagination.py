"""Keyset pagination: page 1,000 of a million jobs costs the same as page 1 (no COUNT, no OFFSET)."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import NotFound
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request

from portal.inputs import INT64, WHOLE_NUMBER


class IdCursorPagination(CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def decode_cursor(self, request: Request) -> Cursor | None:
        """DRF's decoding, and a position that is an id: a forged cursor is a 404 like any other bad cursor."""
        cursor: Any = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            position = str(cursor.position)
            if not WHOLE_NUMBER.fullmatch(position) or not -INT64 <= int(position) <= INT64:
                raise NotFound(self.invalid_cursor_message)
        return cursor  # type: ignore[no-any-return]
