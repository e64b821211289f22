"""Sweep and trial states and their transition tables (changed only by `sweeps.services`)."""

from __future__ import annotations

from django.db import models

from portal.states import Transitions


class SweepState(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"  # every trial failed: no best trial
    CANCELLED = "cancelled", "Cancelled"


class TrialState(models.TextChoices):
    RUNNING = "running", "Running"  # its job is pending, queued or running
    COMPLETE = "complete", "Complete"
    PRUNED = "pruned", "Pruned"  # stopped early by the early-stopping rule
    FAILED = "failed", "Failed"  # its job failed on every attempt
    CANCELLED = "cancelled", "Cancelled"


SWEEP_TRANSITIONS = Transitions(
    {
        SweepState.RUNNING: {SweepState.SUCCEEDED, SweepState.FAILED, SweepState.CANCELLED},
        SweepState.SUCCEEDED: set(),
        SweepState.FAILED: set(),
        SweepState.CANCELLED: set(),
    }
)
TRIAL_TRANSITIONS = Transitions(
    {
        TrialState.RUNNING: {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAILED, TrialState.CANCELLED},
        TrialState.COMPLETE: set(),
        TrialState.PRUNED: set(),
        TrialState.FAILED: set(),
        TrialState.CANCELLED: set(),
    }
)
TRIAL_FINISHED = frozenset({TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAILED, TrialState.CANCELLED})


class Sampler(models.TextChoices):
    GRID = "grid", "Grid"
    RANDOM = "random", "Random"
    TPE = "tpe", "Bayesian (Optuna TPE)"


class EarlyStopping(models.TextChoices):
    NONE = "none", "None"
    MEDIAN = "median", "Median rule"
    ASHA = "asha", "Successive halving (ASHA)"


class Direction(models.TextChoices):
    MINIMIZE = "minimize", "Minimise"
    MAXIMIZE = "maximize", "Maximise"
