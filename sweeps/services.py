"""The sweeps app's only write path: create, advance, report, cancel, and a job from the best trial.

Trials are portal jobs made by jobs.services under the sweep owner's team quota and priority
class. A sweep is advanced under its own lock, so the periodic task and a trial's report never
create the same trial twice; Celery work goes out only after the transaction commits.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import math
import secrets
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from jobs import services as job_services
from jobs.models import Job
from jobs.spec import PLACEHOLDER_RE, SpecError
from jobs.states import TERMINAL, JobState
from portal.locks import transaction_lock
from portal.models import hash_token
from portal.permissions import CHANGE
from portal.queue import after_commit
from portal.states import move
from sweeps import engine, katib
from sweeps import space as sp
from sweeps.models import Sweep, Trial, TrialReport
from sweeps.states import SWEEP_TRANSITIONS, TRIAL_TRANSITIONS, Direction, Sampler, SweepState, TrialState

SWEEP_FIELDS = frozenset(
    {"name", "team", "base", "space", "sampler", "metric", "direction", "max_trials", "max_parallel",
     "early_stopping", "retries", "seed"}
)  # fmt: skip


class SweepActionError(Exception):
    """An action on a sweep was refused; the message says why."""


class SweepForbidden(SweepActionError):
    """The user may see the sweep but not change it."""


class TrialTokenRefused(Exception):
    """The report's token is missing or is not the trial's."""


def limits() -> sp.Limits:
    return sp.Limits(max_trials=settings.SWEEP_MAX_TRIALS, max_parallel=settings.SWEEP_MAX_PARALLEL)


def config(sweep: Sweep) -> engine.StudyConfig:
    return engine.StudyConfig(
        space=sp.space_from_dicts(sweep.space), sampler=sweep.sampler, direction=sweep.direction,
        early_stopping=sweep.early_stopping, seed=sweep.seed,
    )  # fmt: skip


# --- the jobs of trials ----------------------------------------------------------------------


def param_env(params: dict[str, Any]) -> dict[str, str]:
    """GRID_TRIAL_PARAMS as JSON and one GRID_PARAM_<NAME> per parameter."""
    env = {"GRID_TRIAL_PARAMS": json.dumps(params, sort_keys=True)}
    env |= {f"GRID_PARAM_{name.upper()}": str(value) for name, value in params.items()}
    return env


def job_request(sweep: Sweep, params: dict[str, Any], name: str, extra_env: dict[str, str]) -> dict[str, Any]:
    """The job submission of one point: the base spec with `{param}` placeholders filled and the params in env."""
    raw = dict(sweep.base_spec)
    command = raw.get("command")
    if command is None and sweep.template is not None:
        command = list(sweep.template.command)
    if isinstance(command, list):
        fill = {k: str(v) for k, v in params.items()}
        raw["command"] = [PLACEHOLDER_RE.sub(lambda m: fill.get(m.group(1), m.group(0)), str(a)) for a in command]
    template_params = set(sweep.template.params) if sweep.template else set()
    if template_params & set(params):
        raw["params"] = {**(raw.get("params") or {}), **{k: v for k, v in params.items() if k in template_params}}
    raw["env"] = {**(raw.get("env") or {}), **param_env(params), **extra_env}
    raw["name"] = name[:63]
    raw["team"] = sweep.team.slug
    raw.pop("array", None)
    return raw


def _trial_env(sweep: Sweep, trial: Trial, token: str) -> dict[str, str]:
    return {
        "GRID_SWEEP_ID": str(sweep.pk),
        "GRID_TRIAL_ID": str(trial.pk),
        "GRID_TRIAL_TOKEN": token,
        "GRID_TRIAL_REPORT_URL": f"{settings.SWEEP_REPORT_BASE_URL}/api/v1/sweeps/trials/{trial.pk}/report",
    }


def _submit_trial_job(sweep: Sweep, trial: Trial) -> Job:
    """A new job for the trial with a new report token (the old one, if any, stops working)."""
    token = secrets.token_urlsafe(32)
    raw = job_request(sweep, trial.params, f"{sweep.name}-t{trial.number}", _trial_env(sweep, trial, token))
    try:
        jobs = job_services.submit_request(sweep.owner, raw)
    except SpecError as exc:
        raise SpecError({f"base.{k}": v for k, v in exc.errors.items()}) from None
    job = jobs.jobs()[0]
    Trial.objects.filter(pk=trial.pk).update(job=job, token_hash=hash_token(token))
    trial.job, trial.token_hash = job, hash_token(token)
    return job


def _new_trial(sweep: Sweep, number: int, params: dict[str, Any]) -> Trial:
    trial = Trial.objects.create(sweep=sweep, number=number, params=params, token_hash="")
    _submit_trial_job(sweep, trial)
    return trial


# --- create ----------------------------------------------------------------------------------


def create_sweep(user: Any, raw: Any) -> Sweep:
    """Validate and create a sweep and its first trials in one transaction: all of it, or nothing."""
    if not isinstance(raw, dict):
        raise SpecError({"non_field_errors": ["expected a JSON object"]})
    unknown = sorted(set(raw) - SWEEP_FIELDS)
    if unknown:
        raise SpecError({k: ["is not a sweep field"] for k in unknown})
    plan = sp.validate(raw, limits())
    base = raw.get("base")
    if not isinstance(base, dict):
        raise SpecError({"base": ["must be a job submission (an object of job fields)"]})
    teams = job_services.member_teams(user)
    slug = str(raw.get("team") or base.get("team") or "")
    if not slug and len(teams) == 1:
        slug = next(iter(teams.values())).slug
    team = next((t for t in teams.values() if t.slug == slug), None)
    if team is None:
        raise SpecError({"team": ["choose one of your teams" if not slug else f"you are not in a team called {slug[:60]!r}"]})
    template = job_services.resolve_template(base)
    with transaction.atomic():
        sweep = Sweep.objects.create(
            team_id=team.pk, owner=user, name=plan.name, base_spec={**base, "team": team.slug}, template=template,
            space={p.name: p.as_dict() for p in plan.space}, sampler=plan.sampler, metric=plan.metric,
            direction=plan.direction, max_trials=plan.max_trials, max_parallel=plan.max_parallel,
            early_stopping=plan.early_stopping, retries=plan.retries, seed=plan.seed,
        )  # fmt: skip
        _fill(sweep, [])
    return sweep


# --- advance ---------------------------------------------------------------------------------


def _lock(sweep_id: int) -> None:
    transaction_lock(f"sweep-{sweep_id}")


def trial_data(sweep: Sweep, trials: list[Trial]) -> list[engine.TrialData]:
    steps: dict[int, dict[int, float]] = defaultdict(dict)
    for trial_id, step, value in TrialReport.objects.filter(trial__sweep=sweep).values_list("trial_id", "step", "value"):
        steps[trial_id][step] = value
    return [engine.TrialData(t.number, t.params, t.state, t.value, steps[t.pk], t.optuna_attrs) for t in trials]


def _fill(sweep: Sweep, trials: list[Trial]) -> list[Trial]:
    """Create trials until max_parallel are running or max_trials exist (or a grid runs out)."""
    study = config(sweep)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    while len(trials) < sweep.max_trials and running < sweep.max_parallel:
        params = engine.next_params(study, trial_data(sweep, trials))
        if params is None:
            break
        trials.append(_new_trial(sweep, len(trials), params))
        running += 1
    return trials


def advance(sweep_id: int) -> str | None:
    """Settle finished trials, retry failed ones, create the next, and finish the sweep when done."""
    with transaction.atomic():
        _lock(sweep_id)
        sweep = Sweep.objects.select_related("team", "owner", "template").filter(pk=sweep_id).first()
        if sweep is None or sweep.state != SweepState.RUNNING:
            return None if sweep is None else sweep.state
        trials = list(sweep.trials.select_related("job").order_by("number"))
        for trial in trials:
            if trial.state == TrialState.RUNNING:
                _settle(sweep, trial)
        try:
            _fill(sweep, trials)
        except SpecError as exc:  # e.g. the team's pending limit: try again next cycle
            Sweep.objects.filter(pk=sweep.pk).update(detail=f"waiting to create trials: {exc}"[:300])
        return _finish_if_done(sweep, trials)


def _move_trial(trial: Trial, to: str, **fields: Any) -> bool:
    left = move(Trial, trial.pk, to, TRIAL_TRANSITIONS, finished_at=timezone.now(), **fields)
    if left is not None:
        trial.state = to
    return left is not None


def _settle(sweep: Sweep, trial: Trial) -> None:
    job = trial.job
    if job is None:
        _move_trial(trial, TrialState.FAILED, detail="its job was deleted")
    elif job.state == JobState.SUCCEEDED:
        if trial.last_step is None:
            _move_trial(trial, TrialState.FAILED, detail=f"the job succeeded without reporting {sweep.metric}")
        else:
            _move_trial(trial, TrialState.COMPLETE)
    elif job.state in TERMINAL:
        _failed(sweep, trial, job)


def _failed(sweep: Sweep, trial: Trial, job: Job) -> None:
    """Retry a trial whose job failed while it has retries left; else record it failed with its jobs."""
    failed = [*trial.failed_job_ids, job.pk]
    if trial.attempts <= sweep.retries:
        Trial.objects.filter(pk=trial.pk, state=TrialState.RUNNING).update(
            attempts=trial.attempts + 1, failed_job_ids=failed, value=None, last_step=None, optuna_attrs={},
            detail=f"attempt {trial.attempts} ({job.state}, job #{job.pk}) retried",
        )  # fmt: skip
        TrialReport.objects.filter(trial=trial).delete()
        trial.attempts, trial.failed_job_ids = trial.attempts + 1, failed
        _submit_trial_job(sweep, trial)
        return
    why = f"job #{job.pk} {job.state}" + (f" (exit {job.exit_code})" if job.exit_code is not None else "")
    _move_trial(trial, TrialState.FAILED, failed_job_ids=failed, detail=f"{why} after {trial.attempts} attempt(s)")


def _finish_if_done(sweep: Sweep, trials: list[Trial]) -> str:
    if any(t.state == TrialState.RUNNING for t in trials):
        return sweep.state
    exhausted = sweep.sampler == Sampler.GRID and len(trials) >= sp.grid_size(config(sweep).space)
    if len(trials) < sweep.max_trials and not exhausted:
        return sweep.state
    found = best_trial(sweep)
    to = SweepState.SUCCEEDED if found else SweepState.FAILED
    detail = f"best: trial {found.number} ({sweep.metric} = {found.value:g})" if found else "no trial completed"
    move(Sweep, sweep.pk, to, SWEEP_TRANSITIONS, finished_at=timezone.now(), detail=detail)
    sweep.state, sweep.detail = to, detail
    return to


def running_sweep_ids() -> list[int]:
    return list(Sweep.objects.filter(state=SweepState.RUNNING).values_list("pk", flat=True))


def best_trial(sweep: Sweep) -> Trial | None:
    order = "value" if sweep.direction == Direction.MINIMIZE else "-value"
    return sweep.trials.filter(state=TrialState.COMPLETE, value__isnull=False).order_by(order, "number").first()


# --- report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportOutcome:
    """What a trial is told after a report: stop now (pruned, cancelled, finished) or carry on."""

    trial: int
    state: str
    should_stop: bool


def authenticate_trial(trial_id: int, key: str) -> Trial:
    trial = Trial.objects.select_related("sweep").filter(pk=trial_id).first()
    if not key or trial is None or not trial.token_hash or not hmac.compare_digest(trial.token_hash, hash_token(key)):
        raise TrialTokenRefused("the token is not this trial's")
    return trial


def _report_input(raw: Any, metric: str, last_step: int | None, count: int) -> tuple[int, float]:
    if not isinstance(raw, dict):
        raise SpecError({"non_field_errors": ["expected a JSON object {step, value}"]})
    errors: dict[str, list[str]] = {}
    for key in sorted(set(raw) - {"step", "value", "metric"}):
        errors[key] = ["is not a report field (step, value, metric)"]
    if "metric" in raw and raw["metric"] != metric:
        errors["metric"] = [f"this sweep optimises {metric!r}"]
    step, value = raw.get("step"), raw.get("value")
    if isinstance(step, bool) or not isinstance(step, int):
        errors["step"] = ["must be a whole number"]
    elif not 0 <= step <= settings.SWEEP_MAX_STEP:
        errors["step"] = [f"must be between 0 and {settings.SWEEP_MAX_STEP}, not {step}"]
    elif last_step is not None and step <= last_step:
        errors["step"] = [f"must be greater than the last reported step ({last_step}), not {step}"]
    elif count >= settings.SWEEP_MAX_REPORTS_PER_TRIAL:
        errors["step"] = [f"a trial reports at most {settings.SWEEP_MAX_REPORTS_PER_TRIAL} steps"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        errors["value"] = ["must be a finite number (not NaN or infinity)"]
    if errors:
        raise SpecError(errors)
    assert isinstance(step, int) and isinstance(value, int | float)  # checked above
    return step, float(value)


def report(trial_id: int, key: str, raw: Any) -> ReportOutcome:
    """Record one metric value of a trial (token-checked), then let the early-stopping rule judge it."""
    trial = authenticate_trial(trial_id, key)
    with transaction.atomic():
        _lock(trial.sweep_id)
        trial = Trial.objects.select_related("sweep", "sweep__owner", "job").get(pk=trial.pk)
        if trial.state != TrialState.RUNNING:
            return ReportOutcome(trial.pk, trial.state, should_stop=True)
        step, value = _report_input(raw, trial.sweep.metric, trial.last_step, trial.reports.count())
        TrialReport.objects.create(trial=trial, step=step, value=value)
        Trial.objects.filter(pk=trial.pk).update(value=value, last_step=step)
        trial.value, trial.last_step = value, step
        pruned = _judge(trial.sweep, trial)
        after_commit("sweeps.tasks.advance_sweep", trial.sweep_id)
    return ReportOutcome(trial.pk, trial.state, should_stop=pruned)


def _judge(sweep: Sweep, trial: Trial) -> bool:
    trials = list(sweep.trials.order_by("number"))
    prune, attrs = engine.should_prune(config(sweep), trial_data(sweep, trials), trial.number)
    Trial.objects.filter(pk=trial.pk).update(optuna_attrs=attrs)
    if not prune:
        return False
    detail = f"stopped by the {sweep.get_early_stopping_display().lower()} at step {trial.last_step}"
    if _move_trial(trial, TrialState.PRUNED, detail=detail):
        _cancel_job(sweep, trial.job, f"trial {trial.number} of sweep #{sweep.pk} pruned")
    return True


def _cancel_job(sweep: Sweep, job: Job | None, reason: str) -> None:
    if job is None or job.state in TERMINAL:
        return
    with contextlib.suppress(job_services.JobActionError):  # it ended meanwhile: the next advance settles it
        job_services.cancel(sweep.owner, job, reason)


# --- cancel, best ----------------------------------------------------------------------------


def can_change(user: Any, sweep: Sweep) -> bool:
    return Sweep.objects.restrict(user, CHANGE).filter(pk=sweep.pk).exists()


def cancel(user: Any, sweep: Sweep) -> Sweep:
    """Cancel the sweep and every trial still running (their jobs too)."""
    if not can_change(user, sweep):
        raise SweepForbidden("only the sweep's owner, a lead of its team or an operator may cancel it")
    with transaction.atomic():
        _lock(sweep.pk)
        why = f"cancelled by {user.username}"
        if move(Sweep, sweep.pk, SweepState.CANCELLED, SWEEP_TRANSITIONS, finished_at=timezone.now(), detail=why) is None:
            sweep.refresh_from_db()
            raise SweepActionError(f"sweep #{sweep.pk} has already ended ({sweep.state})")
        for trial in sweep.trials.select_related("job").filter(state=TrialState.RUNNING):
            if _move_trial(trial, TrialState.CANCELLED, detail=why):
                _cancel_job(sweep, trial.job, f"sweep #{sweep.pk} {why}")
    sweep.refresh_from_db()
    return sweep


def job_from_best(user: Any, sweep: Sweep) -> Job:
    """Submit a new job (as `user`, in the sweep's team) from the base spec with the best trial's params."""
    found = best_trial(sweep)
    if found is None:
        raise SweepActionError("the sweep has no completed trial yet")
    raw = job_request(sweep, found.params, f"{sweep.name}-best", {})
    try:
        return job_services.submit_request(user, raw).jobs()[0]
    except SpecError as exc:
        raise SweepActionError(str(exc)) from None


def katib_manifest(sweep: Sweep) -> dict[str, Any]:
    """The sweep as a Katib Experiment in the team's namespace (validated; see sweeps.katib)."""
    base, template = sweep.base_spec, sweep.template
    command = base.get("command") or (list(template.command) if template else [])
    return katib.experiment(
        name=sweep.name, namespace=sweep.team.slug, space=config(sweep).space, sampler=sweep.sampler,
        metric=sweep.metric, direction=sweep.direction, max_trials=sweep.max_trials, max_parallel=sweep.max_parallel,
        early_stopping=sweep.early_stopping, retries=sweep.retries,
        image=str(base.get("image") or (template.image if template else "") or "busybox"),
        command=[str(a) for a in command], gpus=int(base.get("gpus_per_node") or (template.gpus_per_node if template else 1)),
    )  # fmt: skip
