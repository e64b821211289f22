"""The pure metering core: run intervals from a job's history, cut at months and rate changes."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from billing import metering
from billing.metering import StateChange
from tests.billing.conftest import at


def history(*pairs: tuple[str, str], pool: str = "p") -> list[StateChange]:
    return [StateChange(at(t), s, pool if s == "admitted" else "") for t, s in pairs]


def test_it_bills_from_admission_to_the_end() -> None:
    changes = history(("2025-03-01 10:00", "pending"), ("2025-03-01 10:05", "admitted"), ("2025-03-01 10:06", "dispatched"),
                      ("2025-03-01 10:07", "running"), ("2025-03-01 11:05", "succeeded"))  # fmt: skip
    intervals = metering.run_intervals(changes, now=at("2025-04-01 00:00"))
    assert intervals == [metering.RunInterval(at("2025-03-01 10:05"), at("2025-03-01 11:05"), "p")]


def test_it_bills_nothing_for_a_job_cancelled_before_admission() -> None:
    changes = history(("2025-03-01 10:00", "pending"), ("2025-03-01 12:00", "cancelled"))
    assert metering.run_intervals(changes, now=at("2025-04-01 00:00")) == []
    assert metering.meter([], 4) == []


def test_it_bills_each_stint_of_a_preempted_job_and_not_the_wait_between() -> None:
    changes = history(
        ("2025-03-01 00:00", "pending"), ("2025-03-01 01:00", "admitted"), ("2025-03-01 01:01", "running"),
        ("2025-03-01 02:00", "preempting"), ("2025-03-01 02:10", "requeued"),
        ("2025-03-01 05:00", "admitted"), ("2025-03-01 05:01", "running"), ("2025-03-01 06:00", "succeeded"),
    )  # fmt: skip
    pieces = metering.meter(metering.run_intervals(changes, now=at("2025-04-01 00:00")), gpus=2)
    assert [(p.start, p.end) for p in pieces] == [
        (at("2025-03-01 01:00"), at("2025-03-01 02:10")),
        (at("2025-03-01 05:00"), at("2025-03-01 06:00")),
    ]
    assert sum(p.gpu_seconds for p in pieces) == Decimal(2 * (70 + 60) * 60)


def test_an_admitted_job_sent_back_to_pending_stops_being_billed() -> None:
    changes = history(("2025-03-01 00:00", "admitted"), ("2025-03-01 00:30", "pending"), ("2025-03-01 09:00", "cancelled"))
    assert [(i.start, i.end) for i in metering.run_intervals(changes, now=at("2025-04-01 00:00"))] == [
        (at("2025-03-01 00:00"), at("2025-03-01 00:30"))
    ]


def test_it_splits_a_job_exactly_at_month_boundaries() -> None:
    interval = metering.RunInterval(at("2025-01-31 22:00"), at("2025-03-01 01:30"), "p")
    pieces = metering.meter([interval], gpus=3)
    assert [p.month for p in pieces] == [date(2025, 1, 1), date(2025, 2, 1), date(2025, 3, 1)]
    assert [p.gpu_seconds for p in pieces] == [Decimal(3 * 2 * 3600), Decimal(3 * 28 * 86400), Decimal(3 * 5400)]
    assert sum(p.gpu_seconds for p in pieces) == metering.gpu_seconds(3, interval.start, interval.end)


def test_a_running_job_is_billed_up_to_now_and_split_at_the_month_end() -> None:
    changes = history(("2025-03-31 20:00", "admitted"), ("2025-03-31 20:01", "running"))
    pieces = metering.meter(metering.run_intervals(changes, now=at("2025-04-01 04:00")), gpus=1)
    assert [(p.month, p.gpu_seconds) for p in pieces] == [
        (date(2025, 3, 1), Decimal(4 * 3600)),
        (date(2025, 4, 1), Decimal(4 * 3600)),
    ]


def test_it_splits_at_rate_changes_inside_a_month() -> None:
    interval = metering.RunInterval(at("2025-03-14 18:00"), at("2025-03-15 06:00"), "p")
    pieces = metering.meter([interval], gpus=1, rate_changes=[at("2025-03-15 00:00"), at("2025-06-01 00:00")])
    assert [(p.start, p.end) for p in pieces] == [
        (at("2025-03-14 18:00"), at("2025-03-15 00:00")),
        (at("2025-03-15 00:00"), at("2025-03-15 06:00")),
    ]


def test_gpu_seconds_are_exact_to_the_microsecond() -> None:
    start = at("2025-03-01 00:00")
    end = start.replace(microsecond=1)
    assert metering.gpu_seconds(8, start, end) == Decimal("0.000008")


def test_the_backend_end_time_replaces_the_portal_noticing_it_later() -> None:
    changes = history(("2025-03-01 00:00", "admitted"), ("2025-03-01 02:00", "succeeded"))
    intervals = metering.run_intervals(changes, now=at("2025-04-01 00:00"), finished_at=at("2025-03-01 01:58"))
    assert intervals[0].end == at("2025-03-01 01:58")
    ignored = metering.run_intervals(changes, now=at("2025-04-01 00:00"), finished_at=at("2025-02-01 00:00"))
    assert ignored[0].end == at("2025-03-01 02:00")


def test_month_helpers() -> None:
    assert metering.next_month(date(2025, 12, 1)) == date(2026, 1, 1)
    assert metering.month_boundaries(at("2025-11-15 00:00"), at("2026-01-01 00:00")) == [at("2025-12-01 00:00")]
