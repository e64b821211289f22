"""Keyset pagination: page 1,000 of a million jobs costs the same as page 1 (no COUNT, no OFFSET)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.models import QuerySet
from rest_framework.exceptions import NotFound
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.views import APIView

from portal.inputs import INT64, WHOLE_NUMBER


class IdCursorPagination(CursorPagination):
    ordering: str | list[str] | tuple[str, ...] = "-id"
    page_size: int | None = 50
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

    def paginate_queryset(
        self, queryset: QuerySet[Any, Any] | Sequence[Any], request: Request, view: APIView | None = None
    ) -> list[Any] | None:
        """DRF's cursor pagination for the one ordering used here (by id), with the page's rows read by `fetch`."""
        assert isinstance(queryset, QuerySet), "keyset pages need a queryset"
        self.request = request
        page_size = self.page_size = self.get_page_size(request)
        if not page_size:
            return None
        self.base_url = request.build_absolute_uri()
        self.ordering = ordering = self.get_ordering(request, queryset, view)  # type: ignore[arg-type]
        self.cursor = self.decode_cursor(request)
        offset, reverse, position = self.cursor if self.cursor is not None else (0, False, None)
        newest_first = ordering[0] == "-id"
        queryset = queryset.order_by("id" if reverse == newest_first else "-id")
        if position is not None:
            older = reverse != newest_first
            queryset = queryset.filter(id__lt=position) if older else queryset.filter(id__gt=position)
        # One row more than the page tells whether a next page exists.
        results = self.fetch(queryset, offset, offset + page_size + 1)
        page = self.page = results[:page_size]
        following = self._get_position_from_instance(results[-1], ordering) if len(results) > len(page) else None
        known = None if position is None else str(position)
        if reverse:
            page.reverse()
            self.has_next = position is not None or offset > 0
            self.has_previous = following is not None
            self.next_position, self.previous_position = known, following
        else:
            self.has_next = following is not None
            self.has_previous = position is not None or offset > 0
            self.next_position, self.previous_position = following, known
        self.display_page_controls = (self.has_previous or self.has_next) and self.template is not None
        return page

    def fetch(self, queryset: QuerySet[Any], start: int, stop: int) -> list[Any]:
        """Rows start..stop of the ordered, cursor-bounded queryset."""
        return list(queryset[start:stop])
