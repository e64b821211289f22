"""Billing's API routes, mounted at /api/v1/billing/."""

from django.urls import include, path

from billing import api

urlpatterns = [
    path("summary/", api.summary, name="billing_api_summary"),
    path("", include(api.router.urls)),
]
