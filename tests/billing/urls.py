"""The portal's URLconf plus billing's pages and API, for tests (the portal wires billing in itself)."""

from django.urls import include, path

from grid.urls import urlpatterns as portal_urlpatterns

urlpatterns = [
    path("billing/", include("billing.urls")),
    path("api/v1/billing/", include("billing.api_urls")),
    *portal_urlpatterns,
]
