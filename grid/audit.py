"""The audit log: one read-only, filterable view over every app's append-only records of administrative actions.

Sources: node state changes (cluster.NodeEvent), quota changes (quotas.QuotaChange), bursts
(bursting.BurstEvent), rate cards (billing.RateCard: each card is a dated price, created and
never edited in place), budget actions (billing.TeamRestriction: who lifted one) and the
telemetry guard's safeguards (cluster.SafeguardEvent: thermal cordons and uncordons, operator
overrides, idle decisions on jobs). Role
changes have no record yet: roles are edited in Django's admin, whose own LogEntry keeps them.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from billing.models import RateCard, TeamRestriction
from bursting.models import BurstEvent
from cluster.models import NodeEvent, SafeguardEvent, SafeguardKind
from portal.csv_export import safe_writer
from quotas.models import QuotaChange

KINDS = ("node", "quota", "burst", "rate", "budget", "safeguard")
PAGE_LIMIT = 500


@dataclass(frozen=True)
class AuditRow:
    """One administrative action: who, when, what, before and after, why."""

    at: datetime
    kind: str
    actor: str
    subject: str
    action: str
    before: str
    after: str
    reason: str


@dataclass(frozen=True)
class AuditFilter:
    kind: str = ""
    actor: str = ""
    since: date | None = None
    until: date | None = None  # inclusive day

    def window(self, qs: QuerySet[Any], field: str) -> QuerySet[Any]:
        if self.since:
            qs = qs.filter(**{f"{field}__gte": timezone.make_aware(datetime.combine(self.since, time.min))})
        if self.until:
            qs = qs.filter(**{f"{field}__lt": timezone.make_aware(datetime.combine(self.until, time.max))})
        return qs


def _nodes(f: AuditFilter, limit: int) -> Iterator[AuditRow]:
    qs = f.window(NodeEvent.objects.select_related("node"), "at")
    if f.actor:
        qs = qs.filter(actor=f.actor)
    for e in qs.order_by("-at", "-id")[:limit]:
        yield AuditRow(e.at, "node", e.actor, e.node.name, f"{e.from_state} → {e.to_state}", e.from_state, e.to_state, e.reason)


def _quotas(f: AuditFilter, limit: int) -> Iterator[AuditRow]:
    qs = f.window(QuotaChange.objects.select_related("team"), "at")
    if f.actor:
        qs = qs.filter(actor=f.actor)
    for q in qs.order_by("-at", "-id")[:limit]:
        subject = f"{q.team.slug} {q.gpu_model}"
        yield AuditRow(q.at, "quota", q.actor, subject, "quota changed", _text(q.before), _text(q.after), q.reason)


def _bursts(f: AuditFilter, limit: int) -> Iterator[AuditRow]:
    qs = f.window(BurstEvent.objects.all(), "at")
    if f.actor:
        qs = qs.filter(actor=f.actor)
    for e in qs.order_by("-at", "-id")[:limit]:
        subject = (f"burst #{e.burst_id}" if e.burst_id else "burst") + (f" {e.node}" if e.node else "")
        yield AuditRow(
            e.at, "burst", e.actor, subject, e.action, e.from_state or _text(e.before), e.to_state or _text(e.after), e.reason
        )


def _rates(f: AuditFilter, limit: int) -> Iterator[AuditRow]:
    if f.actor:
        return  # rate cards do not record who made them
    for r in f.window(RateCard.objects.all(), "created_at").order_by("-created_at", "-id")[:limit]:
        subject = f"{r.gpu_model} {r.pool_kind}{' ' + r.pool if r.pool else ''}"
        after = f"{r.per_gpu_hour}/GPU-h from {r.valid_from}" + (f" until {r.valid_until}" if r.valid_until else "")
        yield AuditRow(r.created_at, "rate", "", subject, "rate card", "", after, r.note)


def _budgets(f: AuditFilter, limit: int) -> Iterator[AuditRow]:
    qs = f.window(TeamRestriction.objects.select_related("team"), "starts_at")
    if f.actor:
        qs = qs.filter(lifted_by=f.actor)
    for r in qs.order_by("-starts_at", "-id")[:limit]:
        yield AuditRow(
            r.starts_at, "budget", "budget", r.team.slug, f"{r.action} in force", "", f"until {r.ends_at:%Y-%m-%d}", ""
        )
        if r.lifted_at:
            yield AuditRow(r.lifted_at, "budget", r.lifted_by, r.team.slug, f"{r.action} lifted", r.action, "", "")


def _safeguards(f: AuditFilter, limit: int) -> Iterator[AuditRow]:
    qs = f.window(SafeguardEvent.objects.all(), "at")
    if f.actor:
        qs = qs.filter(actor=f.actor)
    labels = dict(SafeguardKind.choices)
    for e in qs.order_by("-at", "-id")[:limit]:
        subject = " ".join(p for p in (e.node, f"job #{e.portal_job_id}" if e.portal_job_id else "") if p)
        yield AuditRow(e.at, "safeguard", e.actor, subject, str(labels.get(e.kind, e.kind)), "", "", e.reason)


def _text(value: Any) -> str:
    if value in (None, "", {}):
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


SOURCES = {
    "node": _nodes,
    "quota": _quotas,
    "burst": _bursts,
    "rate": _rates,
    "budget": _budgets,
    "safeguard": _safeguards,
}


def rows(f: AuditFilter, limit: int = PAGE_LIMIT) -> list[AuditRow]:
    """The newest `limit` actions matching the filter, newest first, across every source."""
    kinds = [f.kind] if f.kind in SOURCES else list(SOURCES)
    found: list[AuditRow] = []
    for kind in kinds:
        found.extend(SOURCES[kind](f, limit))
    found.sort(key=lambda r: r.at, reverse=True)
    return found[:limit]


def parse_filter(params: Any) -> AuditFilter:
    """The filter from query parameters; a malformed date is ignored rather than failing the page."""
    return AuditFilter(
        kind=params.get("kind", "") if params.get("kind", "") in KINDS else "",
        actor=params.get("actor", "").strip()[:150],
        since=_day(params.get("since", "")),
        until=_day(params.get("until", "")),
    )


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def as_csv(found: Iterable[AuditRow]) -> str:
    out = io.StringIO()
    writer = safe_writer(out)
    writer.writerow(["at", "kind", "actor", "subject", "action", "before", "after", "reason"])
    for r in found:
        writer.writerow([r.at.isoformat(), r.kind, r.actor, r.subject, r.action, r.before, r.after, r.reason])
    return out.getvalue()
