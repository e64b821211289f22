"""Every model x every role: `objects.restrict(user, action)` answers, and never shows another team's rows.

The demo data (seed_demo: teams vision, render, climate; their jobs run through admission and
dispatch) plus a quota change, a budget, an invoice with a line and a notification for each team
give most models rows of several teams. Then, for every model of the project and every persona:

- the model has the permission mechanism (a RestrictedQuerySet manager and a rule);
- anonymous and inactive users get nothing, for VIEW and CHANGE;
- a researcher, a lead or an outsider sees and changes only rows of their own teams (or their own
  rows: tokens, notifications), found through the row's team, job, invoice or budget;
- operators see every operational row; finance sees every cost row; nobody else sees costs.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import models
from pytest_django import DjangoCaptureOnCommitCallbacks

from artifacts import services as artifact_services
from billing.models import Budget, Invoice, InvoiceLine, Notification
from jobs import services as job_services
from jobs.models import Job
from portal.models import ApiToken, Team, User
from portal.permissions import ACTIONS, CHANGE, VIEW, RestrictedQuerySet
from quotas.models import QuotaChange

PROJECT_APPS = ("portal", "cluster", "quotas", "jobs", "billing", "artifacts", "bursting", "sweeps", "recovery", "grid")
# Rows that belong to one user rather than a team.
OWN_ROWS = {"portal.apitoken": "user_id", "billing.notification": "recipient_id"}
# Paths from a row to its team, tried in order.
TEAM_PATHS = ("team_id", "job__team_id", "invoice__team_id", "budget__team_id")
COSTS = {"billing.usagerecord", "billing.storageusage", "billing.invoice", "billing.invoiceline", "billing.adjustment", "billing.budget",
         "billing.budgetthreshold", "billing.budgetalert", "billing.teamrestriction"}  # fmt: skip
MEMBERS = ("alice", "bob", "carol", "dave")  # researchers and a lead; operators and finance are tested below


def project_models() -> list[type[models.Model]]:
    return [m for m in apps.get_models() if m._meta.app_label in PROJECT_APPS and m is not User]


def restricted(model: type[models.Model]) -> RestrictedQuerySet[models.Model]:
    """All of the model's rows, as the RestrictedQuerySet its manager gives (checked for every model below)."""
    rows = model._default_manager.all()
    assert isinstance(rows, RestrictedQuerySet)
    return rows


def team_path(model: type[models.Model]) -> str | None:
    forward = {f.name for f in model._meta.get_fields() if f.concrete and f.is_relation}  # not reverse relations
    for path in TEAM_PATHS:
        if path.split("__")[0].removesuffix("_id") in forward:
            return path
    return None


@pytest.fixture
def world(db: None, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks) -> dict[str, User]:
    call_command("seed_demo", "--jobs", "12", stdout=open("/dev/null", "w"))  # noqa: SIM115
    with django_capture_on_commit_callbacks(execute=True):
        job_services.admit_and_dispatch()
    job_services.sync_jobs()
    users = {u.username: u for u in User.objects.all()}
    # The demo's budget alert also told vision's lead; leave finance's notifications only, so team members compare equal.
    Notification.objects.exclude(recipient=users["fiona"]).delete()
    for team in Team.objects.all():
        budget, _ = Budget.objects.get_or_create(
            team=team, period="month", defaults={"amount": Decimal("1000")}
        )  # the demo has one
        invoice = Invoice.objects.create(team=team, month=date(2020, 1, 1), currency="EUR")  # before the demo's months
        InvoiceLine.objects.create(invoice=invoice, position=1, description="GPU hours", amount=Decimal("1"))
        Notification.objects.create(recipient=users["fiona"], team=team, subject="budget", body=str(budget.pk))
    ApiToken.issue(users["alice"], "ci")
    ApiToken.issue(users["carol"], "ci")
    for job in Job.objects.select_related("team"):  # every job's artifact locations, every team's figure
        artifact_services.locations(job)
    for team in Team.objects.all():
        artifact_services.policy(team)
    QuotaChange.objects.create(actor="olivia", team=Team.objects.get(slug="vision"), gpu_model="a100", after={"limit": 8})
    return users


def test_every_model_has_the_permission_mechanism() -> None:
    missing = [m._meta.label for m in project_models() if not isinstance(m._default_manager.all(), RestrictedQuerySet)]
    assert missing == []
    assert len(project_models()) >= 35


@pytest.mark.django_db
def test_anonymous_and_inactive_users_get_nothing_anywhere(world: dict[str, User]) -> None:
    from django.contrib.auth.models import AnonymousUser

    gone = world["alice"]
    gone.is_active = False
    for model in project_models():
        for action in ACTIONS:
            assert not restricted(model).restrict(AnonymousUser(), action).exists(), model
            assert not restricted(model).restrict(gone, action).exists(), model


@pytest.mark.parametrize("persona", MEMBERS)
@pytest.mark.django_db
def test_nobody_sees_or_changes_another_teams_rows(world: dict[str, User], persona: str) -> None:
    user = world[persona]
    mine = set(user.team_ids)
    for model in project_models():
        label = model._meta.label_lower
        for action in ACTIONS:
            rows = restricted(model).restrict(user, action)
            if label in OWN_ROWS:
                assert set(rows.values_list(OWN_ROWS[label], flat=True)) <= {user.pk}, (label, action)
                continue
            path = team_path(model)
            if path is None:
                continue  # not a team's row (nodes, pools, classes, templates): shared or operators only
            teams = set(rows.values_list(path, flat=True))
            assert teams <= mine, f"{persona} may {action} {label} rows of teams {teams - mine}"


@pytest.mark.django_db
def test_a_researcher_sees_the_team_rows_a_lead_does_but_no_costs(world: dict[str, User]) -> None:
    alice, bob = world["alice"], world["bob"]  # both in vision; bob leads it
    for model in project_models():
        label = model._meta.label_lower
        if team_path(model) is None:
            continue
        if label in COSTS:
            assert not restricted(model).restrict(alice).exists(), label
        else:
            seen_by_alice = restricted(model).restrict(alice).count()
            assert seen_by_alice == restricted(model).restrict(bob).count(), label
    assert Invoice.objects.restrict(bob).exists() and not Invoice.objects.restrict(bob, CHANGE).exists()
    assert Job.objects.restrict(alice).exists()


@pytest.mark.django_db
def test_operators_see_every_operational_row_and_finance_every_cost(world: dict[str, User]) -> None:
    olivia, fiona = world["olivia"], world["fiona"]
    for model in project_models():
        label = model._meta.label_lower
        everything = model._default_manager.count()
        if label in OWN_ROWS:
            continue
        who = fiona if label in COSTS else olivia
        assert restricted(model).restrict(who, VIEW).count() == everything, (label, who.username)
    assert Invoice.objects.restrict(fiona, CHANGE).count() == Invoice.objects.count()
    assert not Invoice.objects.restrict(olivia).exists() or olivia.is_finance  # costs are finance's, not operators'


@pytest.mark.django_db
def test_a_lead_may_act_on_every_job_of_the_team_a_researcher_only_on_their_own(world: dict[str, User]) -> None:
    alice, bob = world["alice"], world["bob"]
    vision_jobs = Job.objects.filter(team__slug="vision")
    assert set(Job.objects.restrict(bob, CHANGE)) == set(vision_jobs)
    assert set(Job.objects.restrict(alice, CHANGE)) == set(vision_jobs.filter(owner=alice))
