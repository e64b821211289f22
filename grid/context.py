"""Template context every page gets: which parts of the navigation the user may open."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from billing.access import may_see_billing


def nav(request: HttpRequest) -> dict[str, Any]:
    user = request.user
    if not user.is_authenticated:
        return {"nav": {}}
    return {"nav": {"billing": may_see_billing(user)}}
