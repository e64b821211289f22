"""ASGI entry point of the reference server: `daphne bench.list_reference.asgi:application`."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.list_reference.settings")
application = get_asgi_application()
