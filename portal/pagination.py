"""Keyset pagination: page 1,000 of a million jobs costs the same as page 1 (no COUNT, no OFFSET)."""

from rest_framework.pagination import CursorPagination


class IdCursorPagination(CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
