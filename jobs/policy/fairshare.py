"""Decayed usage history: GPU-seconds that lose half their weight every half-life.

The same decay as Slurm's PriorityDecayHalfLife: usage u(t) obeys du/dt = g(t) - λu with
λ = ln 2 / half-life, where g is the GPUs a team holds. Holding g GPUs for ever settles at
g · half-life / ln 2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def decay_factor(elapsed_s: float, half_life_s: float) -> float:
    return 0.5 ** (elapsed_s / half_life_s) if half_life_s > 0 else 0.0


def advance_usage(
    usage: Mapping[str, float], held_gpus: Mapping[str, int], elapsed_s: float, half_life_s: float
) -> dict[str, float]:
    """Usage `elapsed_s` later, with each team holding `held_gpus` throughout (exact integral)."""
    if elapsed_s <= 0:
        return dict(usage)
    factor = decay_factor(elapsed_s, half_life_s)
    # ∫0^T g·2^(-(T-s)/h) ds = g·h/ln2·(1 - 2^(-T/h)); with no decay it is simply g·T.
    gained = half_life_s / math.log(2) * (1 - factor) if half_life_s > 0 else 0.0
    teams = set(usage) | {t for t, g in held_gpus.items() if g}
    return {t: usage.get(t, 0.0) * factor + held_gpus.get(t, 0) * gained for t in teams}


def with_idle_penalty(usage: Mapping[str, float], idle_share: Mapping[str, float], weight: float) -> dict[str, float]:
    """Usage as fair share sees it when a site counts idle allocation against a team.

    A team whose held GPUs were idle for `idle_share` (0-1) of their time ranks as if its usage were
    `1 + weight · idle_share` times what it is; `weight` 0 leaves every team as it was.
    """
    if weight <= 0:
        return dict(usage)
    return {team: value * (1.0 + weight * min(1.0, max(0.0, idle_share.get(team, 0.0)))) for team, value in usage.items()}
