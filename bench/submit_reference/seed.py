"""Create the reference's tables and one user per client, all members of team `bench`; print their token keys.

DATABASE_URL=postgres://... python -m bench.submit_reference.seed 50
"""

from __future__ import annotations

import json
import os
import sys


def main(clients: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.submit_reference.settings")
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from bench.submit_reference.models import Membership, Team

    call_command("migrate", verbosity=0, interactive=False)  # auth and tokens first: the jobs refer to users
    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)  # then this app's tables
    team = Team.objects.create(slug="bench")
    keys = []
    for i in range(clients):
        user = User.objects.create_user(f"bench-{i}")
        Membership.objects.create(user=user, team=team)
        keys.append(Token.objects.create(user=user).key)
    print(json.dumps(keys))


if __name__ == "__main__":
    main(int(sys.argv[1]))
