"""One way to change state, for every model that has one (jobs, bursts, nodes, invoices).

A model's states are constants; which state may follow which is a `Transitions` table; a change is
one conditional UPDATE (`move`) that succeeds only from a state the table allows and reports the
state it actually left, so the caller's event row never records a stale "from". Safe under
duplicate deliveries and concurrent writers: of two racing moves one wins, the other sees False.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import models


class Transitions:
    """Which states each state may move to."""

    def __init__(self, table: Mapping[str, Iterable[str]]) -> None:
        self.table = {str(source): frozenset(str(t) for t in targets) for source, targets in table.items()}
        self._sources: dict[str, frozenset[str]] = {}

    def sources_of(self, target: str) -> frozenset[str]:
        """The states from which `target` may be reached."""
        if target not in self._sources:
            self._sources[target] = frozenset(s for s, targets in self.table.items() if target in targets)
        return self._sources[target]

    def allows(self, source: str, target: str) -> bool:
        return target in self.table.get(source, frozenset())


def move(
    model: type[models.Model], pk: Any, to: str, transitions: Transitions, *, field: str = "state", **fields: Any
) -> str | None:
    """Move row `pk` of `model` to `to` if the table allows it from its state now, with `fields` set too.

    Returns the state it left, or None if it did not move (no such row, or not allowed from its
    state). Compare-and-set: a concurrent change makes it look again, up to three times. Call it
    inside the transaction that writes the event row.
    """
    allowed = transitions.sources_of(to)
    rows = model._default_manager.filter(pk=pk)
    for _ in range(3):
        current = rows.values_list(field, flat=True).first()
        if current is None or current not in allowed:
            return None
        if rows.filter(**{field: current}).update(**{field: to}, **fields):
            return str(current)
    return None
