"""The telemetry guard's safeguards (thermal cordons, operator overrides, idle decisions) in the unified audit log."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.test import Client
from django.utils import timezone

from cluster import guard
from cluster.models import Node, SafeguardEvent, SafeguardKind
from cluster.simulator.backend import SimulatorBackend
from grid import audit
from portal.models import User


def test_a_thermal_cordon_and_an_operator_override_are_in_the_audit_log(
    web: Callable[[User | None], Client], olivia: User, grid: SimulatorBackend
) -> None:
    node = Node.objects.order_by("name").first()
    assert node is not None
    SafeguardEvent.objects.create(kind=SafeguardKind.CORDON, node=node.name, actor="thermal-guard", reason="GPU 3 at 92 °C")
    guard.override(node.name, olivia, "sensor misreads; checked on site")

    found = audit.rows(audit.AuditFilter(kind="safeguard"))

    assert [(r.kind, r.actor, r.subject, r.action) for r in found] == [
        ("safeguard", "olivia", node.name, "Operator override"),
        ("safeguard", "thermal-guard", node.name, "Cordoned"),
    ]
    assert "sensor misreads" in found[0].reason and found[1].reason == "GPU 3 at 92 °C"
    page = web(olivia).get("/console/audit/?kind=safeguard").content.decode()
    assert "GPU 3 at 92 °C" in page and "Operator override" in page


def test_idle_decisions_name_the_job_and_the_filters_apply(
    web: Callable[[User | None], Client], olivia: User, grid: SimulatorBackend
) -> None:
    old = timezone.now() - timedelta(days=3)
    SafeguardEvent.objects.create(kind=SafeguardKind.IDLE_STOPPED, portal_job_id=42, actor="idle-guard", reason="idle 2 h")
    SafeguardEvent.objects.create(kind=SafeguardKind.CORDON, node="n1", actor="thermal-guard", reason="hot", at=old)

    by_actor = audit.rows(audit.AuditFilter(actor="idle-guard"))
    since_yesterday = audit.rows(audit.AuditFilter(kind="safeguard", since=(timezone.now() - timedelta(days=1)).date()))

    assert [(r.subject, r.action) for r in by_actor] == [("job #42", "Stopped as idle")]
    assert [r.reason for r in since_yesterday] == ["idle 2 h"]
    csv_text = web(olivia).get("/console/audit.csv?kind=safeguard").content.decode()
    assert "idle-guard,job #42,Stopped as idle" in csv_text and "thermal-guard,n1,Cordoned" in csv_text
