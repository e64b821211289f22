from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

import artifacts.api
import billing.api
import bursting.api
import cluster.api
import jobs.api
import notebooks.api
import portal.api
import quotas.api
import sweeps.api
from grid import views
from grid.metrics import metrics as portal_metrics
from jobs import planning_views
from portal import probes

# The REST API, one way: each app's api.py lists its viewsets in ROUTES and its function views in
# PATHS; all of them live under /api/v1/ in one router with one browsable root.
API_MODULES = (portal.api, cluster.api, quotas.api, jobs.api, billing.api, artifacts.api, bursting.api, sweeps.api, notebooks.api)
router = DefaultRouter()
for module in API_MODULES:
    for prefix, viewset, basename in module.ROUTES:
        router.register(prefix, viewset, basename=basename)
api_paths = [route for module in API_MODULES for route in getattr(module, "PATHS", [])]

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("healthz", views.healthz, name="healthz"),
    path("livez", probes.livez, name="livez"),
    path("metrics", portal_metrics, name="portal_metrics"),
    path("tokens/", views.tokens, name="tokens"),
    path("teams/", views.team_list, name="team_list"),
    path("teams/<slug:slug>/", views.team_detail, name="team_detail"),
    path("tokens/<int:token_id>/revoke/", views.revoke_token, name="revoke_token"),
    path("jobs/", include("jobs.urls")),
    path("planning/", planning_views.planning_list, name="planning_list"),
    path("planning/<int:run_id>/", planning_views.planning_detail, name="planning_detail"),
    path("planning/<int:run_id>/status", planning_views.planning_status, name="planning_status"),
    path("sim/", include("cluster.urls")),
    path("billing/", include("billing.urls")),
    path("artifacts/", include("artifacts.urls")),
    path("sweeps/", include("sweeps.urls")),
    path("notebooks/", include("notebooks.urls")),
    path("console/", include("grid.console_urls")),
    path("api/v1/", include([*api_paths, *router.urls])),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # A page for people: a signed-out visitor is sent to sign in (the schema itself is API: 401).
    path("api/docs/", login_required(SpectacularSwaggerSplitView.as_view(url_name="schema")), name="swagger"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
]

handler500 = "portal.unavailable.server_error"
