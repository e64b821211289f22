"""REST API for sweeps: create, read, cancel, and the trials' token-authenticated metric reports.

Thin function views over sweeps.services, mounted under /api/v1/ by grid/urls.py (PATHS).
"""

from __future__ import annotations

from typing import Any

from django.urls import path
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from jobs.spec import SpecError
from sweeps import present, services
from sweeps.models import Sweep

TRIAL_AUTH_SCHEME = "Trial"


def visible_sweep(user: Any, sweep_id: int) -> Sweep:
    """The sweep if `user` may see it; 404 otherwise (an outsider learns nothing)."""
    sweep = Sweep.objects.restrict(user).select_related("team", "owner").filter(pk=sweep_id).first()
    if sweep is None:
        raise exceptions.NotFound("No such sweep")
    return sweep


def answer(sweep: Sweep) -> dict[str, Any]:
    trials = list(sweep.trials.all())
    return present.sweep_dict(sweep, trials, services.best_trial(sweep))


@extend_schema(methods=["GET"], tags=["sweeps"], operation_id="v1_sweeps_list", responses={200: dict})
@extend_schema(
    methods=["POST"], tags=["sweeps"], operation_id="v1_sweeps_create", request=dict,
    responses={201: dict, 400: OpenApiResponse(description="Field errors")},
)  # fmt: skip
@api_view(["GET", "POST"])
def sweeps(request: Request) -> Response:
    if request.method == "GET":
        rows = Sweep.objects.restrict(request.user).select_related("team", "owner")[:100]
        return Response({"results": [{"id": s.pk, "name": s.name, "team": s.team.slug, "state": s.state} for s in rows]})
    try:
        sweep = services.create_sweep(request.user, request.data)
    except SpecError as exc:
        raise exceptions.ValidationError(exc.errors) from None
    return Response(answer(sweep), status=status.HTTP_201_CREATED)


@extend_schema(tags=["sweeps"], responses={200: dict})
@api_view(["GET"])
def sweep_detail(request: Request, sweep_id: int) -> Response:
    return Response(answer(visible_sweep(request.user, sweep_id)))


@extend_schema(tags=["sweeps"], request=None, responses={200: dict})
@api_view(["POST"])
def sweep_cancel(request: Request, sweep_id: int) -> Response:
    sweep = visible_sweep(request.user, sweep_id)
    try:
        sweep = services.cancel(request.user, sweep)
    except services.SweepForbidden as exc:
        raise exceptions.PermissionDenied(str(exc)) from None
    except services.SweepActionError as exc:
        raise exceptions.ValidationError({"state": [str(exc)]}) from None
    return Response(answer(sweep))


def _trial_key(request: Request) -> str:
    scheme, _, key = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return key.strip() if scheme == TRIAL_AUTH_SCHEME else ""


@extend_schema(
    tags=["sweeps"], request=dict, auth=[],
    responses={200: dict, 400: OpenApiResponse(description="Field errors"), 401: OpenApiResponse(description="No trial token")},
    description="A trial reports its metric: `Authorization: Trial <GRID_TRIAL_TOKEN>`, body {step, value}. "
    "The answer's `should_stop` tells the job to exit (pruned or cancelled).",
)  # fmt: skip
@api_view(["POST"])
@authentication_classes([])
@permission_classes([AllowAny])
def trial_report(request: Request, trial_id: int) -> Response:
    key = _trial_key(request)
    if not key:
        return Response({"detail": f"send the trial's token: Authorization: {TRIAL_AUTH_SCHEME} <GRID_TRIAL_TOKEN>"}, status=401)
    try:
        outcome = services.report(trial_id, key, request.data)
    except services.TrialTokenRefused as exc:
        return Response({"detail": str(exc)}, status=403)
    except SpecError as exc:
        raise exceptions.ValidationError(exc.errors) from None
    return Response({"trial": outcome.trial, "state": outcome.state, "should_stop": outcome.should_stop})


# Mounted under /api/v1/ by grid/urls.py, like every app's ROUTES and PATHS.
ROUTES: list[tuple[str, Any, str]] = []
PATHS = [
    path("sweeps/", sweeps, name="api_sweeps"),
    path("sweeps/<int:sweep_id>/", sweep_detail, name="api_sweep"),
    path("sweeps/<int:sweep_id>/cancel/", sweep_cancel, name="api_sweep_cancel"),
    path("sweeps/trials/<int:trial_id>/report", trial_report, name="api_trial_report"),
]
