"""The job list's pages over millions of jobs: one keyset walk per visible team, merged.

`WHERE team_id IN (…) AND id < cursor ORDER BY id DESC LIMIT n` lets PostgreSQL walk the primary
key backward and filter, betting that the teams' jobs are spread evenly over the ids. When they
are all old (a quiet team, a member of old projects) it reads every newer job first: 545 ms over
a million jobs (docs/benchmarks.md, section 2). Asking each team on its own, for ids only, is
answered from the `(team_id, -id)` index without touching other teams' rows, and PostgreSQL merges
the sorted arms:

    (SELECT id … WHERE <visible, filters, cursor> AND team_id = t1 ORDER BY id DESC LIMIT n)
    UNION ALL (… t2 …) … ORDER BY id DESC LIMIT n

then the page's rows are read by id. Every arm and the row read are the list's own queryset
(`Job.objects.visible_to(user)` with the list's filters), so the split changes the plan, never
what a user sees: a job outside the visible teams cannot appear, and each visible job's team is
one of the arms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.core.paginator import Page, Paginator
from django.db import connections
from django.db.models import QuerySet
from rest_framework.request import Request
from rest_framework.views import APIView

from jobs.models import Job
from portal.models import Team
from portal.pagination import IdCursorPagination

# More arms than this cost more to plan than the split saves; such users get the single query.
MAX_TEAM_ARMS = 64


def fetch_by_team(jobs: QuerySet[Job], team_ids: Sequence[int], start: int, stop: int) -> list[Job]:
    """`jobs[start:stop]` of a queryset ordered by id (either way), read one team at a time."""
    if tuple(jobs.query.order_by) not in (("-id",), ("id",)):
        raise ValueError("fetch_by_team reads querysets ordered by id")
    if not team_ids or jobs.query.is_empty():
        return []
    ids = jobs.select_related(None).values_list("id", flat=True)
    if len(team_ids) == 1:
        page = list(ids.filter(team_id=team_ids[0])[start:stop])
    elif not connections[jobs.db].features.supports_slicing_ordering_in_compound:
        return list(jobs[start:stop])  # SQLite (development): no LIMIT inside a UNION, and no million jobs
    else:
        arms = [ids.filter(team_id=team)[:stop] for team in team_ids]
        page = list(arms[0].union(*arms[1:], all=True).order_by(*jobs.query.order_by)[start:stop])
    return list(jobs.filter(id__in=page)) if page else []


def list_team_ids(user: Any, params: Any) -> list[int] | None:
    """The teams the job list reads for this user: the visible ones, narrowed to `?team=`; None: all at once."""
    teams = Job.objects.visible_team_ids(user)
    if slug := params.get("team"):
        named = list(Team.objects.filter(slug=slug).values_list("id", flat=True))
        teams = named if teams is None else [t for t in teams if t in named]
    if teams is not None and len(teams) > MAX_TEAM_ARMS:
        return None
    return teams


class JobCursorPagination(IdCursorPagination):
    """Keyset pages of the job list, each read by `fetch_by_team` where the user sees some teams only."""

    def paginate_queryset(
        self, queryset: QuerySet[Any, Any] | Sequence[Any], request: Request, view: APIView | None = None
    ) -> list[Any] | None:
        self.team_ids = list_team_ids(request.user, request.query_params)
        return super().paginate_queryset(queryset, request, view)

    def fetch(self, queryset: QuerySet[Any], start: int, stop: int) -> list[Any]:
        if self.team_ids is None:
            return super().fetch(queryset, start, stop)
        return fetch_by_team(queryset, self.team_ids, start, stop)


if TYPE_CHECKING:  # Django's Paginator is generic only in its stubs
    _JobPaginatorBase = Paginator[Job]
else:
    _JobPaginatorBase = Paginator


class JobPaginator(_JobPaginatorBase):
    """Numbered pages of the job list page (newest first), each read like the API's where the user sees some teams."""

    def __init__(self, jobs: QuerySet[Job], per_page: int, team_ids: list[int] | None) -> None:
        super().__init__(jobs.order_by("-id"), per_page)
        self.team_ids = team_ids

    def page(self, number: Any) -> Page[Job]:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        jobs: QuerySet[Job] = self.object_list  # type: ignore[assignment]
        rows = list(jobs[bottom:top]) if self.team_ids is None else fetch_by_team(jobs, self.team_ids, bottom, top)
        return Page(rows, number, self)
