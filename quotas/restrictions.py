"""Restrictions other apps put on a team (billing's budget actions), read by the admission scheduler.

Billing depends on jobs, so jobs cannot import billing; instead billing registers a provider here
when it loads, and admission asks this registry. A provider maps team ids to the actions in force:
`hold_new_jobs` (new jobs wait with reason budget), `lower_priority` (the team's jobs go last),
`deny_bursts` (no cloud burst capacity for the team).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

HOLD_NEW_JOBS = "hold_new_jobs"
LOWER_PRIORITY = "lower_priority"
DENY_BURSTS = "deny_bursts"

Provider = Callable[[int], set[str]]
_providers: list[Provider] = []


def register(provider: Provider) -> None:
    if provider not in _providers:
        _providers.append(provider)


def active(team_ids: Iterable[int]) -> dict[int, set[str]]:
    """The restrictions in force per team (teams without any are left out)."""
    found: dict[int, set[str]] = {}
    for team_id in set(team_ids):
        actions = set().union(*(provider(team_id) for provider in _providers)) if _providers else set()
        if actions:
            found[team_id] = actions
    return found
