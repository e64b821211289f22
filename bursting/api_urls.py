"""Bursting's API routes, mounted at /api/v1/bursting/."""

from django.urls import include, path

from bursting import api

urlpatterns = [path("", include(api.router.urls))]
