"""The settings the production checks run under: portal.settings itself.

The security block (docs/security.md) lives in portal/settings.py; this module only gives the
checks one name to point DJANGO_SETTINGS_MODULE at, so they test exactly what deployments run.
"""

from portal.settings import *  # noqa: F403
