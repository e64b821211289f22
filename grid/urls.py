from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from cluster.api import NodeViewSet, PoolViewSet
from grid import views
from grid.metrics import metrics as portal_metrics
from jobs import planning_views
from jobs.api import JobTemplateViewSet, JobViewSet
from portal import api, probes
from quotas.api import QuotaViewSet

router = DefaultRouter()
router.register("jobs", JobViewSet, basename="job")
router.register("templates", JobTemplateViewSet, basename="template")
router.register("teams", api.TeamViewSet, basename="team")
router.register("pools", PoolViewSet, basename="pool")
router.register("nodes", NodeViewSet, basename="node")
router.register("tokens", api.ApiTokenViewSet, basename="token")
router.register("quotas", QuotaViewSet, basename="quota")

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
    path("api/v1/billing/", include("billing.api_urls")),
    path("console/", include("grid.console_urls")),
    path("api/v1/bursting/", include("bursting.api_urls")),
    path("api/v1/me/", api.me, name="api_me"),
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
]

handler500 = "portal.unavailable.server_error"
