"""Metering: a job's state history in, GPU-seconds per pool, month and rate period out.

Pure: no ORM, no clock, no I/O. Times are aware datetimes; months are calendar months in UTC.

What is billed: GPUs are reserved for a job from its admission, so a run interval starts when the
job enters `admitted` and ends when it leaves the GPU-holding states (admitted, dispatched,
running, preempting) — by finishing, failing, being cancelled, being requeued, or going back to
pending. A preempted and requeued job therefore pays for each stint that held GPUs and not for
the time it waited in between; a job cancelled before admission pays nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

HOLDING = frozenset({"admitted", "dispatched", "running", "preempting"})
MICROSECONDS = Decimal("0.000001")


@dataclass(frozen=True)
class StateChange:
    """One entry of a job's history: the state it entered, when, and (on admission) the pool."""

    at: datetime
    to_state: str
    pool: str = ""


@dataclass(frozen=True)
class RunInterval:
    """A stretch of time during which the job held its GPUs on one pool."""

    start: datetime
    end: datetime
    pool: str


@dataclass(frozen=True)
class UsagePiece:
    """A run interval cut so that it lies in one month and one rate period."""

    start: datetime
    end: datetime
    pool: str
    month: date
    gpu_seconds: Decimal


def run_intervals(history: Sequence[StateChange], *, now: datetime, finished_at: datetime | None = None) -> list[RunInterval]:
    """The intervals during which the job held GPUs; an interval still open ends at `now`.

    `finished_at` is the end time the backend reported; it replaces the portal's own record of
    the last interval's end when it lies inside that interval (the portal notices an end a sync
    cycle after it happened, and the backend's clock is what ran the job).
    """
    intervals: list[RunInterval] = []
    start: StateChange | None = None
    for change in sorted(history, key=lambda c: c.at):
        if change.to_state == "admitted" and start is None:
            start = change
        elif change.to_state not in HOLDING and start is not None:
            intervals.append(RunInterval(start.at, change.at, start.pool))
            start = None
    if start is not None:
        intervals.append(RunInterval(start.at, max(now, start.at), start.pool))
    return _trim_last(intervals, finished_at) if intervals and start is None else intervals


def _trim_last(intervals: list[RunInterval], finished_at: datetime | None) -> list[RunInterval]:
    last = intervals[-1]
    if finished_at is None or not last.start <= finished_at < last.end:
        return intervals
    return [*intervals[:-1], RunInterval(last.start, finished_at, last.pool)]


def month_of(at: datetime) -> date:
    utc = at.astimezone(UTC)
    return date(utc.year, utc.month, 1)


def month_start(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=UTC)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def month_bounds(month: date) -> tuple[datetime, datetime]:
    """The first instant of the month and the first instant of the next one."""
    return month_start(month), month_start(next_month(month))


def month_boundaries(start: datetime, end: datetime) -> list[datetime]:
    """The starts of months strictly inside (start, end)."""
    cuts = []
    month = next_month(month_of(start))
    while month_start(month) < end:
        cuts.append(month_start(month))
        month = next_month(month)
    return cuts


def split(interval: RunInterval, cuts: Iterable[datetime]) -> list[RunInterval]:
    """Cut an interval at every instant of `cuts` that lies strictly inside it."""
    inside = sorted({c for c in cuts if interval.start < c < interval.end})
    edges = [interval.start, *inside, interval.end]
    return [RunInterval(a, b, interval.pool) for a, b in itertools.pairwise(edges)]


def gpu_seconds(gpus: int, start: datetime, end: datetime) -> Decimal:
    """GPUs x seconds, exact to the microsecond (so the pieces of an interval sum to the whole)."""
    delta = end - start
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return (Decimal(gpus * micros) * MICROSECONDS).quantize(MICROSECONDS)


def meter(intervals: Iterable[RunInterval], gpus: int, rate_changes: Iterable[datetime] = ()) -> list[UsagePiece]:
    """Split intervals at month boundaries and at the given rate-change instants; drop empty pieces."""
    changes = list(rate_changes)
    pieces = []
    for interval in intervals:
        for part in split(interval, [*month_boundaries(interval.start, interval.end), *changes]):
            if part.end > part.start:
                pieces.append(
                    UsagePiece(part.start, part.end, part.pool, month_of(part.start), gpu_seconds(gpus, part.start, part.end))
                )
    return pieces
