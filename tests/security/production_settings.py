"""The settings the production checks run under: grid.settings itself.

The security block (docs/security.md) lives in grid/settings.py; this module only gives the
checks one name to point DJANGO_SETTINGS_MODULE at, so they test exactly what deployments run.
"""

from grid.settings import *  # noqa: F403
