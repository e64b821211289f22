"""REST API for notebooks: start, list, read, stop (gridctl and scripts). Mounted under /api/v1/ by grid/urls.py.

The server itself is reached only through the proxy (/notebooks/<id>/proxy/), never through this API;
no answer carries the server's address or token.
"""

from __future__ import annotations

from typing import Any

from django.urls import path
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from jobs.spec import SpecError
from notebooks import services
from notebooks.models import Notebook


def visible_notebook(user: Any, notebook_id: int) -> Notebook:
    notebook = Notebook.objects.restrict(user).select_related("job", "job__team", "owner").filter(pk=notebook_id).first()
    if notebook is None:
        raise exceptions.NotFound("No such notebook")
    return notebook


def answer(notebook: Notebook) -> dict[str, Any]:
    job = notebook.job
    return {
        "id": notebook.pk, "job": job.pk, "job_state": job.state, "team": job.team.slug, "owner": notebook.owner.username,
        "server_type": notebook.server_type, "state": notebook.state, "end_reason": notebook.end_reason,
        "detail": notebook.detail, "gpu_model": job.gpu_model, "gpus": job.gpus, "lifetime_s": notebook.lifetime_s,
        "url": notebook.proxy_path, "created_at": notebook.created_at, "ready_at": notebook.ready_at,
        "last_activity": notebook.last_activity, "warned_at": notebook.warned_at, "ended_at": notebook.ended_at,
    }  # fmt: skip


@extend_schema(methods=["GET"], tags=["notebooks"], operation_id="v1_notebooks_list", responses={200: dict})
@extend_schema(
    methods=["POST"], tags=["notebooks"], operation_id="v1_notebooks_create", request=dict,
    responses={201: dict, 400: OpenApiResponse(description="Field errors")},
)  # fmt: skip
@api_view(["GET", "POST"])
def notebooks(request: Request) -> Response:
    if request.method == "GET":
        rows = Notebook.objects.restrict(request.user).select_related("job", "job__team", "owner")[:100]
        return Response({"results": [answer(n) for n in rows]})
    try:
        notebook = services.start(request.user, request.data)
    except SpecError as exc:
        raise exceptions.ValidationError(exc.errors) from None
    return Response(answer(visible_notebook(request.user, notebook.pk)), status=status.HTTP_201_CREATED)


@extend_schema(tags=["notebooks"], responses={200: dict})
@api_view(["GET"])
def notebook_detail(request: Request, notebook_id: int) -> Response:
    notebook = visible_notebook(request.user, notebook_id)
    services.refresh(notebook.pk)
    return Response(answer(visible_notebook(request.user, notebook_id)))


@extend_schema(tags=["notebooks"], request=None, responses={200: dict})
@api_view(["POST"])
def notebook_stop(request: Request, notebook_id: int) -> Response:
    notebook = visible_notebook(request.user, notebook_id)
    try:
        services.stop(request.user, notebook)
    except services.NotebookActionError as exc:
        raise exceptions.ValidationError({"state": [str(exc)]}) from None
    return Response(answer(visible_notebook(request.user, notebook_id)))


ROUTES: list[tuple[str, Any, str]] = []
PATHS = [
    path("notebooks/", notebooks, name="api_notebooks"),
    path("notebooks/<int:notebook_id>/", notebook_detail, name="api_notebook"),
    path("notebooks/<int:notebook_id>/stop/", notebook_stop, name="api_notebook_stop"),
]
