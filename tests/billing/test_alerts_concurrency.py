"""Several workers evaluating one budget at once send each alert once (PostgreSQL, real threads)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date
from decimal import Decimal

import pytest
from django.core import mail
from django.db import connection

from billing import services
from billing.models import BudgetAlert, Notification, RateCard, TeamRestriction
from jobs.models import Job
from portal.models import Team, User
from tests.billing.conftest import at

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_eight_workers_alert_once_per_threshold(
    vision: Team, alice: User, bob: User, fiona: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]
) -> None:
    assert connection.vendor == "postgresql"
    budget = services.set_budget(vision.pk, Decimal(10), [(Decimal(50), "notify"), (Decimal(100), "hold_new_jobs")])
    job_with_history(vision, alice, [("2025-03-02 00:00", "admitted"), ("2025-03-02 06:00", "succeeded")])  # 12.00
    services.meter_month(date(2025, 3, 1), now=at("2025-03-10 00:00"))
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            services.evaluate_budget(budget.pk, at("2025-03-10 00:00"))
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(BudgetAlert.objects.values_list("percent", flat=True)) == [Decimal(50), Decimal(100)]
    assert TeamRestriction.objects.filter(action="hold_new_jobs").count() == 1
    assert len(mail.outbox) == 2
    assert Notification.objects.count() == 4  # 2 alerts, each to bob and fiona
