"""The simulated grid's dcgm-exporter style endpoints (what Prometheus would scrape)."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from cluster import dcgm
from cluster.models import SimNode
from cluster.simulator.telemetry import SimulatorTelemetry
from portal.access import is_operator

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def scraper_or_operator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Telemetry names the jobs on each GPU: only Prometheus (bearer METRICS_TOKEN) or operators."""

    @wraps(view)
    def guarded(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        header = request.headers.get("Authorization", "")
        token = settings.METRICS_TOKEN
        if token and header.startswith("Bearer ") and hmac.compare_digest(header[7:].encode(), token.encode()):
            return view(request, *args, **kwargs)
        if is_operator(request.user):
            return view(request, *args, **kwargs)
        return HttpResponse("metrics need an operator session or the scrape token\n", status=403, content_type=CONTENT_TYPE)

    return guarded


@require_GET
@scraper_or_operator
def metrics(request: HttpRequest) -> HttpResponse:
    """Every simulated GPU, as one dcgm-exporter scrape."""
    return HttpResponse(dcgm.render(SimulatorTelemetry().samples()), content_type=CONTENT_TYPE)


@require_GET
@scraper_or_operator
def node_metrics(request: HttpRequest, node: str) -> HttpResponse:
    """One simulated node's GPUs, as that node's dcgm-exporter would serve them."""
    if not SimNode.objects.filter(name=node).exists():
        raise Http404("no such node")
    return HttpResponse(dcgm.render(SimulatorTelemetry().samples([node])), content_type=CONTENT_TYPE)
