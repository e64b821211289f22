"""Notebook pages: start form, list, detail (with Open), stop. Thin views over notebooks.services."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from cluster.gpus import GPU_MODELS
from jobs.spec import SpecError
from notebooks import services
from notebooks.models import Notebook
from notebooks.states import OPEN, ServerType
from portal.access import signed_in

FORM_FIELDS = ("team", "name", "gpu_model", "gpus", "server_type", "lifetime_s", "priority")


def visible(user: Any, notebook_id: int) -> Notebook:
    """The notebook if `user` may see it (its owner or an operator); 404 otherwise."""
    notebook = Notebook.objects.restrict(user).select_related("job", "job__team", "owner").filter(pk=notebook_id).first()
    if notebook is None:
        raise Http404("No such notebook")
    return notebook


@login_required
def notebook_list(request: HttpRequest) -> HttpResponse:
    notebooks = Notebook.objects.restrict(request.user).select_related("job", "job__team", "owner")[:200]
    return render(request, "notebooks/list.html", {"notebooks": notebooks})


@login_required
def notebook_new(request: HttpRequest) -> HttpResponse:
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = {"gpus": 1, "lifetime_s": settings.NOTEBOOK_DEFAULT_LIFETIME_S, "gpu_model": "a100"}
    if request.method == "POST":
        values = {k: request.POST[k] for k in FORM_FIELDS if request.POST.get(k)}
        try:
            notebook = services.start(signed_in(request), values)
        except SpecError as exc:
            errors = exc.errors
        else:
            return redirect("notebook_detail", notebook_id=notebook.pk)
    context = {
        "errors": errors, "values": values, "teams": sorted(signed_in(request).team_slugs.values()),
        "models": sorted(GPU_MODELS), "server_types": [c for c in ServerType.choices if c[0] in settings.NOTEBOOK_SERVER_TYPES],
        "max_lifetime_s": settings.NOTEBOOK_MAX_LIFETIME_S, "max_gpus": settings.NOTEBOOK_MAX_GPUS,
    }  # fmt: skip
    return render(request, "notebooks/new.html", context, status=400 if errors else 200)


@login_required
def notebook_detail(request: HttpRequest, notebook_id: int) -> HttpResponse:
    notebook = visible(request.user, notebook_id)
    services.refresh(notebook.pk)  # a page load is a chance to see the server come up
    notebook.refresh_from_db()
    context = {
        "notebook": notebook, "job": notebook.job, "open": notebook.state in OPEN,
        "events": list(notebook.events.all()), "may_stop": services.can_stop(request.user, notebook),
    }  # fmt: skip
    return render(request, "notebooks/detail.html", context)


@login_required
@require_POST
def notebook_stop(request: HttpRequest, notebook_id: int) -> HttpResponse:
    notebook = visible(request.user, notebook_id)
    try:
        services.stop(request.user, notebook)
    except services.NotebookActionError as exc:
        messages.error(request, str(exc))
    return redirect("notebook_detail", notebook_id=notebook.pk)
