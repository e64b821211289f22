"""The WSGI application: plain HTTP (pages and the API) under gunicorn sync workers (docs/operations.md).

Each sync worker serves one request at a time, so it keeps one persistent database connection
instead of the per-process pool the ASGI server needs (portal.env).
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grid.settings")
os.environ.setdefault("PORTAL_SERVER", "wsgi")
application = get_wsgi_application()
