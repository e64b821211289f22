"""Sweeps as plain data: the API's answers, the page's JSON feed and its chart (pure figure dicts)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from portal import charts
from sweeps.models import Sweep, Trial, TrialReport


def trial_dict(trial: Trial) -> dict[str, Any]:
    return {
        "id": trial.pk, "number": trial.number, "params": trial.params, "state": trial.state,
        "value": trial.value, "last_step": trial.last_step, "job": trial.job_id, "attempts": trial.attempts,
        "failed_jobs": trial.failed_job_ids, "detail": trial.detail,
    }  # fmt: skip


def sweep_dict(sweep: Sweep, trials: list[Trial], best: Trial | None) -> dict[str, Any]:
    return {
        "id": sweep.pk, "name": sweep.name, "team": sweep.team.slug, "owner": sweep.owner.get_username(),
        "state": sweep.state, "detail": sweep.detail, "sampler": sweep.sampler, "metric": sweep.metric,
        "direction": sweep.direction, "max_trials": sweep.max_trials, "max_parallel": sweep.max_parallel,
        "early_stopping": sweep.early_stopping, "retries": sweep.retries, "space": sweep.space,
        "base": sweep.base_spec, "best": trial_dict(best) if best else None,
        "trials": [trial_dict(t) for t in trials],
    }  # fmt: skip


def curves(trials: list[Trial]) -> dict[int, list[tuple[int, float]]]:
    """Each trial's reported (step, value) points, by trial id, in step order."""
    points: dict[int, list[tuple[int, float]]] = defaultdict(list)
    rows = TrialReport.objects.filter(trial__in=trials).order_by("trial_id", "step").values_list("trial_id", "step", "value")
    for trial_id, step, value in rows:
        points[trial_id].append((step, value))
    return points


def objective_figure(metric: str, trials: list[Trial], points: dict[int, list[tuple[int, float]]]) -> dict[str, Any]:
    """One line per trial: the metric over steps; pruned trials dotted, failed ones grey."""
    dash = {"pruned": "dot", "failed": "dash", "cancelled": "dash"}
    traces = [
        charts.trace(
            "scatter",
            x=[s for s, _ in points.get(t.pk, [])],
            y=[v for _, v in points.get(t.pk, [])],
            name=f"trial {t.number} ({t.state})",
            mode="lines+markers",
            line={"width": 1.5, "dash": dash.get(t.state, "solid")},
        )
        for t in trials
    ]
    layout = {
        **charts.LAYOUT, "title": {"text": f"{metric} per trial", "font": {"size": 14}}, "height": 360,
        "xaxis": {"title": "step", "gridcolor": "#e5e7eb"}, "yaxis": {"title": metric, "gridcolor": "#e5e7eb"},
    }  # fmt: skip
    return charts.figure(traces, layout)
