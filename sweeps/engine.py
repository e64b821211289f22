"""Sampling and early stopping with Optuna, over an in-memory study rebuilt from the portal's rows.

Pure: plain trial data in, params or a prune decision out. No second schema (the trials are the
portal's own rows) and the same rows with the same seed give the same answer, so tests are exact.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from sweeps import space as sp
from sweeps.states import EarlyStopping, Sampler
from sweeps.states import TrialState as State

optuna.logging.set_verbosity(logging.WARNING)

MEDIAN_STARTUP_TRIALS = 3  # the median rule waits for this many finished trials
ASHA_MIN_RESOURCE = 1  # steps before the first rung
ASHA_REDUCTION = 3


@dataclass(frozen=True)
class TrialData:
    """What the study needs of one trial row."""

    number: int
    params: Mapping[str, Any]
    state: str
    value: float | None = None
    intermediate: Mapping[int, float] = field(default_factory=dict)
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyConfig:
    space: tuple[sp.Param, ...]
    sampler: str
    direction: str
    early_stopping: str
    seed: int


def distribution(param: sp.Param) -> BaseDistribution:
    if param.type == "categorical":
        return CategoricalDistribution(list(param.choices))
    if param.type == "int":
        return IntDistribution(int(param.low), int(param.high), log=param.log, step=param.step)
    return FloatDistribution(param.low, param.high, log=param.log)


def _state(data: TrialData) -> TrialState:
    if data.state == State.COMPLETE and data.value is not None:
        return TrialState.COMPLETE
    if data.state == State.PRUNED:
        return TrialState.PRUNED
    if data.state == State.RUNNING:
        return TrialState.RUNNING
    return TrialState.FAIL


def _pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    if config.early_stopping == EarlyStopping.MEDIAN:
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=0)
    if config.early_stopping == EarlyStopping.ASHA:
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=ASHA_MIN_RESOURCE, reduction_factor=ASHA_REDUCTION)
    return optuna.pruners.NopPruner()


def _sampler(config: StudyConfig, seed: int) -> optuna.samplers.BaseSampler:
    if config.sampler == Sampler.TPE:
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    return optuna.samplers.RandomSampler(seed=seed)


def study(config: StudyConfig, trials: Sequence[TrialData], seed: int = 0) -> optuna.Study:
    """An in-memory study holding `trials`, in number order."""
    direction = StudyDirection.MAXIMIZE if config.direction == "maximize" else StudyDirection.MINIMIZE
    made = optuna.create_study(direction=direction, sampler=_sampler(config, seed), pruner=_pruner(config))
    dists = {p.name: distribution(p) for p in config.space}
    for data in sorted(trials, key=lambda t: t.number):
        state = _state(data)
        made.add_trial(
            optuna.trial.create_trial(
                state=state,
                params=dict(data.params),
                distributions=dists,
                value=data.value if state == TrialState.COMPLETE else None,
                intermediate_values={int(k): float(v) for k, v in data.intermediate.items()},
                system_attrs=dict(data.attrs),
            )
        )
    return made


def next_params(config: StudyConfig, trials: Sequence[TrialData]) -> dict[str, Any] | None:
    """The params of trial number len(trials); None when a grid has no points left."""
    if config.sampler == Sampler.GRID:
        return sp.grid_point(config.space, len(trials))
    made = study(config, trials, seed=config.seed + len(trials))
    asked = made.ask({p.name: distribution(p) for p in config.space})
    return dict(asked.params)


def should_prune(config: StudyConfig, trials: Sequence[TrialData], number: int) -> tuple[bool, dict[str, Any]]:
    """Whether the early-stopping rule stops running trial `number` now, and its pruner bookkeeping to keep."""
    if config.early_stopping == EarlyStopping.NONE:
        return False, {}
    made = study(config, trials)
    frozen: FrozenTrial = next(t for t in made.get_trials(deepcopy=False) if t.number == number)
    if frozen.last_step is None:
        return False, dict(frozen.system_attrs)
    pruned = made.pruner.prune(made, frozen)
    after = next(t for t in made.get_trials(deepcopy=False) if t.number == number)
    return bool(pruned), dict(after.system_attrs)
