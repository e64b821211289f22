"""Sweep pages: list, create, detail (chart polled from its JSON), cancel, job from best, Katib export."""

from __future__ import annotations

import json
from typing import Any

import yaml
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from jobs.spec import SpecError
from portal.access import signed_in
from sweeps import present, services
from sweeps.models import Sweep
from sweeps.states import Direction, EarlyStopping, Sampler

POLL_S = 5
EXAMPLE_BASE = {
    "name": "train",
    "command": ["python", "train.py", "--lr", "{lr}"],
    "gpu_model": "a100",
    "gpus_per_node": 1,
    "walltime": 3600,
}
EXAMPLE_SPACE = {"lr": {"type": "float", "low": 0.0001, "high": 0.1, "log": True}, "layers": {"type": "int", "low": 2, "high": 8}}


def _visible(request: HttpRequest, sweep_id: int) -> Sweep:
    sweep = Sweep.objects.restrict(request.user).select_related("team", "owner", "template").filter(pk=sweep_id).first()
    if sweep is None:
        raise Http404("No such sweep")
    return sweep


@login_required
def sweep_list(request: HttpRequest) -> HttpResponse:
    sweeps = Sweep.objects.restrict(request.user).select_related("team", "owner")[:200]
    return render(request, "sweeps/list.html", {"sweeps": sweeps})


def _form_request(post: Any) -> dict[str, Any]:
    """The form's fields as a sweep request; the base spec and space are JSON text areas."""
    raw: dict[str, Any] = {
        k: post.get(k) for k in ("name", "team", "sampler", "metric", "direction", "early_stopping") if post.get(k)
    }
    for key in ("max_trials", "max_parallel", "retries", "seed"):
        if post.get(key):
            raw[key] = post[key]
    for key in ("base", "space"):
        try:
            raw[key] = json.loads(post.get(key) or "null")
        except ValueError as exc:
            raise SpecError({key: [f"is not valid JSON: {exc}"]}) from None
    return raw


@login_required
def sweep_new(request: HttpRequest) -> HttpResponse:
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = {"base": json.dumps(EXAMPLE_BASE, indent=2), "space": json.dumps(EXAMPLE_SPACE, indent=2)}
    if request.method == "POST":
        values = request.POST.dict()
        try:
            sweep = services.create_sweep(signed_in(request), _form_request(request.POST))
        except SpecError as exc:
            errors = exc.errors
        else:
            return redirect("sweep_detail", sweep_id=sweep.pk)
    context = {
        "errors": errors, "values": values, "teams": sorted(signed_in(request).team_slugs.values()),
        "samplers": Sampler.choices, "directions": Direction.choices, "stopping": EarlyStopping.choices,
    }  # fmt: skip
    return render(request, "sweeps/new.html", context, status=400 if errors else 200)


@login_required
def sweep_detail(request: HttpRequest, sweep_id: int) -> HttpResponse:
    sweep = _visible(request, sweep_id)
    trials = list(sweep.trials.select_related("job"))
    context = {
        "sweep": sweep, "trials": trials, "best": services.best_trial(sweep), "poll_s": POLL_S,
        "may_change": services.can_change(request.user, sweep),
        "figure": present.objective_figure(sweep.metric, trials, present.curves(trials)),
    }  # fmt: skip
    return render(request, "sweeps/detail.html", context)


@login_required
def sweep_data(request: HttpRequest, sweep_id: int) -> JsonResponse:
    """What the page polls every POLL_S seconds: the sweep, its trials and the chart's figure."""
    sweep = _visible(request, sweep_id)
    trials = list(sweep.trials.all())
    body = present.sweep_dict(sweep, trials, services.best_trial(sweep))
    body["figure"] = present.objective_figure(sweep.metric, trials, present.curves(trials))
    return JsonResponse(body)


@login_required
@require_POST
def sweep_cancel(request: HttpRequest, sweep_id: int) -> HttpResponse:
    sweep = _visible(request, sweep_id)
    try:
        services.cancel(request.user, sweep)
    except services.SweepForbidden as exc:
        return HttpResponse(str(exc), status=403)
    except services.SweepActionError as exc:
        messages.error(request, str(exc))
    return redirect("sweep_detail", sweep_id=sweep.pk)


@login_required
@require_POST
def sweep_best_job(request: HttpRequest, sweep_id: int) -> HttpResponse:
    """A new job from the base spec with the best trial's params, submitted as the signed-in member."""
    sweep = _visible(request, sweep_id)
    try:
        job = services.job_from_best(signed_in(request), sweep)
    except services.SweepActionError as exc:
        messages.error(request, str(exc))
        return redirect("sweep_detail", sweep_id=sweep.pk)
    return redirect("job_detail", job_id=job.pk)


@login_required
def sweep_katib(request: HttpRequest, sweep_id: int) -> HttpResponse:
    sweep = _visible(request, sweep_id)
    text = yaml.safe_dump(services.katib_manifest(sweep), sort_keys=False)
    response = HttpResponse(text, content_type="application/yaml")
    response["Content-Disposition"] = f'attachment; filename="sweep-{sweep.pk}-katib.yaml"'
    return response
