"""Template context every page gets: which parts of the navigation the user may open."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from billing.access import may_see_billing
from portal.models import Membership


def nav(request: HttpRequest) -> dict[str, Any]:
    user = request.user
    if not user.is_authenticated:
        return {"nav": {}}
    # "New job" only for someone who can submit: a member of a team (operators and finance often are not).
    return {"nav": {"billing": may_see_billing(user), "submit": Membership.objects.filter(user=user).exists()}}
