"""GPU Grid Portal: the Django project and the `portal` app (accounts, teams, dashboard)."""

from portal.celery import app as celery_app

__all__ = ["celery_app"]
