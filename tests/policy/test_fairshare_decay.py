"""Decayed usage: half the weight every half-life, and held GPUs accrue exactly."""

from __future__ import annotations

import math

import pytest

from jobs.policy import advance_usage, decay_factor


def test_usage_halves_every_half_life() -> None:
    assert advance_usage({"vision": 1000.0}, {}, 3600, 3600)["vision"] == pytest.approx(500.0)
    assert decay_factor(7200, 3600) == pytest.approx(0.25)


def test_held_gpus_accrue_the_exact_integral() -> None:
    gained = advance_usage({}, {"vision": 4}, 3600, 3600)["vision"]
    assert gained == pytest.approx(4 * 3600 / math.log(2) * 0.5)


def test_many_small_steps_equal_one_big_one() -> None:
    usage: dict[str, float] = {"vision": 50.0}
    for _ in range(100):
        usage = advance_usage(usage, {"vision": 2}, 36, 3600)
    assert usage["vision"] == pytest.approx(advance_usage({"vision": 50.0}, {"vision": 2}, 3600, 3600)["vision"])
