"""Validation of a sweep request and the pure rules of its search space.

Pure: raw input and the site limits in, a clean `SweepPlan` or per-field errors out (the same
`SpecError` a job submission raises, so the API answers both the same way). Every message names
the field and the limit it broke.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobs.spec import SpecError
from sweeps.states import Direction, EarlyStopping, Sampler

PARAM_RE = re.compile(r"^[a-z_][a-z0-9_]{0,31}$")  # a command placeholder and, upper-cased, an env name
METRIC_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
PARAM_TYPES = ("float", "int", "categorical")
MAX_PARAMS = 16
MAX_CHOICES = 64
MAX_GRID_POINTS = 50  # a float's points on a grid
MAX_RETRIES = 3
Value = float | int | str | bool


@dataclass(frozen=True)
class Limits:
    """The site's limits on a sweep (settings SWEEP_*)."""

    max_trials: int
    max_parallel: int


@dataclass(frozen=True)
class Param:
    """One dimension of the search space."""

    name: str
    type: str  # float, int, categorical
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: int = 1  # int only
    choices: tuple[Value, ...] = ()
    points: int = 5  # float on a grid: how many values between low and high

    def as_dict(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        data: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high, "log": self.log}
        if self.type == "int":
            data |= {"low": int(self.low), "high": int(self.high), "step": self.step}
        else:
            data["points"] = self.points
        return data


@dataclass(frozen=True)
class SweepPlan:
    """A validated sweep: everything but the job's base spec, which jobs.spec validates."""

    name: str
    space: tuple[Param, ...]
    sampler: str
    metric: str
    direction: str
    max_trials: int
    max_parallel: int
    early_stopping: str
    retries: int
    seed: int


class _Errors:
    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, key: str, message: str) -> None:
        self.errors.setdefault(key, []).append(message)


def _whole(raw: Mapping[str, Any], key: str, default: int, err: _Errors, low: int, high: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        else:
            err.add(key, "must be a whole number")
            return default
    if not low <= value <= high:
        err.add(key, f"must be between {low} and {high}, not {value}")
        return default
    return int(value)


def _choice(raw: Mapping[str, Any], key: str, default: str, options: Sequence[str], err: _Errors) -> str:
    value = raw.get(key, default)
    if value not in options:
        err.add(key, f"must be one of {', '.join(options)}")
        return default
    return str(value)


def _number(spec: Mapping[str, Any], key: str, where: str, err: _Errors) -> float | None:
    value = spec.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        err.add(where, f"{key} must be a finite number")
        return None
    return float(value)


def parse_param(name: str, spec: Any, err: _Errors) -> Param | None:
    where = f"space.{name}"
    if not PARAM_RE.match(name):
        err.add("space", f"parameter name {name[:40]!r} must be lower-case letters, digits and _ (at most 32)")
        return None
    if not isinstance(spec, Mapping) or spec.get("type") not in PARAM_TYPES:
        err.add(where, f"type must be one of {', '.join(PARAM_TYPES)}")
        return None
    if spec["type"] == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not 1 <= len(choices) <= MAX_CHOICES:
            err.add(where, f"choices must be a list of 1 to {MAX_CHOICES} values")
            return None
        if not all(
            isinstance(c, str | int | float | bool) and not (isinstance(c, float) and not math.isfinite(c)) for c in choices
        ):
            err.add(where, "choices must be strings, numbers or booleans")
            return None
        if len({repr(c) for c in choices}) != len(choices):
            err.add(where, "choices must not repeat")
            return None
        return Param(name, "categorical", choices=tuple(choices))
    low, high = _number(spec, "low", where, err), _number(spec, "high", where, err)
    if low is None or high is None:
        return None
    log = bool(spec.get("log", False))
    if not low < high:
        err.add(where, f"low ({low:g}) must be less than high ({high:g})")
        return None
    if log and low <= 0:
        err.add(where, f"a log-uniform range needs low > 0, not {low:g}")
        return None
    if spec["type"] == "int":
        step = spec.get("step", 1)
        if low != int(low) or high != int(high):
            err.add(where, "an int range needs whole low and high")
            return None
        if isinstance(step, bool) or not isinstance(step, int) or step < 1 or (log and step != 1):
            err.add(where, "step must be a whole number >= 1 (1 on a log range)")
            return None
        return Param(name, "int", low=low, high=high, log=log, step=step)
    points = spec.get("points", 5)
    if isinstance(points, bool) or not isinstance(points, int) or not 2 <= points <= MAX_GRID_POINTS:
        err.add(where, f"points must be a whole number between 2 and {MAX_GRID_POINTS}")
        return None
    return Param(name, "float", low=low, high=high, log=log, points=points)


def parse_space(raw: Any, err: _Errors) -> tuple[Param, ...]:
    if not isinstance(raw, Mapping) or not 1 <= len(raw) <= MAX_PARAMS:
        err.add("space", f"must be an object of 1 to {MAX_PARAMS} parameters")
        return ()
    params = [parse_param(str(name), spec, err) for name, spec in raw.items()]
    return tuple(p for p in params if p is not None)


def validate(raw: Mapping[str, Any], limits: Limits) -> SweepPlan:
    """A clean plan from raw input, or SpecError naming every field that broke a rule."""
    err = _Errors()
    name = str(raw.get("name") or "")
    if not NAME_RE.match(name):
        err.add("name", "letters, digits, dot, dash, underscore; at most 63 characters")
    metric = str(raw.get("metric") or "")
    if not METRIC_RE.match(metric):
        err.add("metric", "a metric name: letters, digits, . _ / -; at most 63 characters")
    space = parse_space(raw.get("space"), err)
    sampler = _choice(raw, "sampler", Sampler.TPE, Sampler.values, err)
    direction = _choice(raw, "direction", Direction.MINIMIZE, Direction.values, err)
    stopping = _choice(raw, "early_stopping", EarlyStopping.NONE, EarlyStopping.values, err)
    max_trials = _whole(raw, "max_trials", 10, err, 1, limits.max_trials)
    max_parallel = _whole(raw, "max_parallel", 1, err, 1, limits.max_parallel)
    retries = _whole(raw, "retries", 0, err, 0, MAX_RETRIES)
    seed = _whole(raw, "seed", 0, err, 0, 2**31 - 1)
    if "max_parallel" not in err.errors and "max_trials" not in err.errors and max_parallel > max_trials:
        err.add("max_parallel", f"must not exceed max_trials ({max_trials}), not {max_parallel}")
    if sampler == Sampler.GRID and space and "space" not in err.errors:
        size = grid_size(space)
        if size > limits.max_trials:
            err.add("space", f"the grid has {size} points; at most {limits.max_trials} (SWEEP_MAX_TRIALS)")
    if err.errors:
        raise SpecError(err.errors)
    return SweepPlan(name, space, sampler, metric, direction, max_trials, max_parallel, stopping, retries, seed)


# --- the grid --------------------------------------------------------------------------------


def axis(param: Param) -> list[Value]:
    """The values a grid takes along one parameter."""
    if param.type == "categorical":
        return list(param.choices)
    if param.type == "int":
        return list(range(int(param.low), int(param.high) + 1, param.step))
    n = param.points
    if param.log:
        lo, hi = math.log(param.low), math.log(param.high)
        return [math.exp(lo + (hi - lo) * i / (n - 1)) for i in range(n)]
    return [param.low + (param.high - param.low) * i / (n - 1) for i in range(n)]


def grid_size(space: Sequence[Param]) -> int:
    size = 1
    for param in space:
        size *= len(axis(param))
        if size > 10**9:
            break
    return size


def grid_point(space: Sequence[Param], index: int) -> dict[str, Value] | None:
    """The `index`th point of the grid (row-major over the parameters), None past its end."""
    if index >= grid_size(space):
        return None
    point = next(itertools.islice(itertools.product(*(axis(p) for p in space)), index, None))
    return {p.name: v for p, v in zip(space, point, strict=True)}


def contains(param: Param, value: Any) -> bool:
    """Whether `value` is a valid value of `param` (checked on every trial's params in tests)."""
    if param.type == "categorical":
        return value in param.choices
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if param.type == "int" and (not isinstance(value, int) or (value - int(param.low)) % param.step):
        return False
    return param.low - 1e-9 * abs(param.low) <= value <= param.high + 1e-9 * abs(param.high)


def space_from_dicts(data: Mapping[str, Mapping[str, Any]]) -> tuple[Param, ...]:
    """A stored space back as Params (it was validated when the sweep was created)."""
    err = _Errors()
    params = tuple(p for name, spec in data.items() if (p := parse_param(name, spec, err)) is not None)
    if err.errors:
        raise ValueError(f"stored search space is invalid: {err.errors}")
    return params
