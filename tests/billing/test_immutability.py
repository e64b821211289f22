"""A finalised invoice cannot be changed through any path: service, task, API, admin, or raw SQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import Client
from rest_framework.test import APIClient

from billing import services, tasks
from billing.errors import InvoiceFinalised
from billing.models import Invoice, InvoiceLine, RateCard
from jobs.models import Job
from portal.models import Team, User
from tests.billing.conftest import at

MARCH = date(2025, 3, 1)


@pytest.fixture
def final(vision: Team, alice: User, rates: dict[str, RateCard], job_with_history: Callable[..., Job]) -> Invoice:
    job_with_history(vision, alice, [("2025-03-03 00:00", "admitted"), ("2025-03-03 10:00", "succeeded")])
    services.meter_month(MARCH, now=at("2025-04-02 00:00"))
    return services.finalise(services.generate_invoice(vision.pk, MARCH).pk, "fiona", now=at("2025-04-02 00:00"))


def snapshot(invoice: Invoice) -> tuple[object, ...]:
    invoice = Invoice.objects.get(pk=invoice.pk)
    return invoice.state, invoice.total, invoice.generated_at, list(invoice.lines.values_list("id", "amount", "gpu_seconds"))


def test_the_service_refuses(final: Invoice, vision: Team, alice: User, job_with_history: Callable[..., Job]) -> None:
    before = snapshot(final)
    job_with_history(vision, alice, [("2025-03-20 00:00", "admitted"), ("2025-03-20 10:00", "succeeded")])  # late-arriving usage
    services.meter_month(MARCH, now=at("2025-04-05 00:00"))
    with pytest.raises(InvoiceFinalised, match="is finalised and cannot be changed"):
        services.generate_invoice(vision.pk, MARCH)
    with pytest.raises(InvoiceFinalised):
        services.finalise(final.pk, "fiona", now=at("2025-04-05 00:00"))
    with pytest.raises(InvoiceFinalised):
        services.invoices.delete_draft(final.pk)
    assert snapshot(final) == before


def test_the_monthly_task_leaves_it_alone(final: Invoice, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(final)
    monkeypatch.setattr("django.utils.timezone.now", lambda: at("2025-04-01 02:00"))  # the task's run on the 1st
    result = tasks.draft_last_month_invoices.apply().get()
    assert result == {"month": "2025-03", "drafted": 0, "failed": {}}
    assert snapshot(final) == before


def test_the_api_offers_no_way_to_change_it(api: Callable[[User | None], APIClient], final: Invoice, fiona: User) -> None:
    client = api(fiona)
    url = f"/api/v1/billing/invoices/{final.pk}/"
    assert client.patch(url, {"total": "0"}, format="json").status_code == 405
    assert client.put(url, {"total": "0"}, format="json").status_code == 405
    assert client.delete(url).status_code == 405
    assert client.post(f"{url}finalise/").status_code == 409
    again = client.post("/api/v1/billing/invoices/generate/", {"team": "vision", "month": "2025-03"}, format="json")
    assert again.status_code == 409 and "finalised" in again.json()["invoice"][0]


def test_the_admin_shows_it_read_only(web: Callable[[User | None], Client], final: Invoice, vision: Team) -> None:
    from portal.models import User

    admin = User.objects.create_superuser("root", "root@example.org", "pw")
    client = web(admin)
    page = client.get(f"/admin/billing/invoice/{final.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert client.post(f"/admin/billing/invoice/{final.pk}/change/", {"total": "0"}).status_code == 403
    assert client.post(f"/admin/billing/invoice/{final.pk}/delete/", {"post": "yes"}).status_code == 403
    client.post("/admin/billing/invoice/", {"action": "delete_selected", "_selected_action": [final.pk], "post": "yes"})
    assert Invoice.objects.filter(pk=final.pk).exists()


@pytest.mark.postgres
def test_the_database_refuses_even_raw_sql(final: Invoice) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the trigger guard is PostgreSQL's; SQLite relies on the service, admin and API checks")
    for statement in (
        f"UPDATE billing_invoice SET total = 0 WHERE id = {final.pk}",
        f"DELETE FROM billing_invoice WHERE id = {final.pk}",
        f"UPDATE billing_invoiceline SET amount = 0 WHERE invoice_id = {final.pk}",
        f"DELETE FROM billing_invoiceline WHERE invoice_id = {final.pk}",
    ):
        with pytest.raises(DatabaseError, match="is finalised"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    line = InvoiceLine(invoice=final, position=99, description="sneaked in", amount=Decimal("1.00"))
    with pytest.raises(DatabaseError), transaction.atomic():
        line.save()
    assert Invoice.objects.get(pk=final.pk).total == Decimal("20.00")
