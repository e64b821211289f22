"""The operator console: nodes (map, jobs, drain/cordon/resume with a preview), queues, burst proposals,
checkpoint recovery (snapshots, restore), audit log.

Pages that show every team are operators' only and answer 404 to others (as planning does);
actions answer 403 to non-operators. The queues page shows a member their own teams' rows.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from bursting import charts, services
from bursting.models import BurstEvent, BurstPolicy, BurstProposal, BurstState, InstanceType
from cluster import services as cluster_services
from cluster.models import Node
from cluster.states import NodeState
from grid import audit, teams
from jobs.models import Job
from jobs.states import HOLDS_GPUS, WAITING
from portal.access import is_operator, member_team_ids, signed_in
from portal.models import Team
from recovery import services as recovery

NODE_ACTIONS = {"cordon": cluster_services.cordon, "drain": cluster_services.drain, "resume": cluster_services.resume}


def _operator_page(request: HttpRequest) -> None:
    if not is_operator(request.user):
        raise Http404("No such page")  # the console shows every team's work: operators only


def _operator_action(request: HttpRequest) -> None:
    if not is_operator(request.user):
        raise PermissionDenied("only operators act in the console")


def jobs_by_node() -> dict[str, list[Job]]:
    found: dict[str, list[Job]] = defaultdict(list)
    for job in Job.objects.filter(state__in=HOLDS_GPUS).select_related("team", "owner"):
        for node in job.placement:
            found[node].append(job)
    return found


@login_required
def nodes(request: HttpRequest) -> HttpResponse:
    _operator_page(request)
    placed = jobs_by_node()
    all_nodes = list(Node.objects.select_related("pool"))
    cells = [charts.NodeCell(n.pool.name, n.name, n.state, n.gpus, n.gpus_used, len(placed.get(n.name, []))) for n in all_nodes]
    rows = [(n, placed.get(n.name, [])) for n in all_nodes]
    return render(request, "bursting/nodes.html", {"rows": rows, "charts": {"nodes": charts.node_map_figure(cells)}})


@login_required
def node_action(request: HttpRequest, name: str) -> HttpResponse:
    """GET or a first POST: preview the running jobs the action affects; a POST with confirm acts."""
    _operator_page(request)
    node = Node.objects.select_related("pool").filter(name=name).first()
    if node is None:
        raise Http404("No such node")
    action = request.POST.get("action") or request.GET.get("action", "drain")
    reason = (request.POST.get("reason") or "").strip()
    error = ""
    if action not in NODE_ACTIONS:
        error = "action: one of cordon, drain, resume"
    elif request.method == "POST" and request.POST.get("confirm") == "yes":
        try:
            changed = NODE_ACTIONS[action](node.name, signed_in(request).username, reason)
        except cluster_services.NodeActionError as exc:
            error = str(exc)
        else:
            _report_action(request, changed, action)
            return redirect("console_nodes")
    elif request.method == "POST" and action != "resume" and not reason:
        error = "reason: a reason is required to cordon or drain a node"
    affected = jobs_by_node().get(node.name, [])
    context = {"node": node, "action": action, "reason": reason, "affected": affected, "error": error}
    context["drain_report"] = cluster_services.last_drain_report(node) if node.state == NodeState.DRAINING else None
    return render(request, "bursting/node_action.html", {**context, "confirming": request.method == "POST" and not error})


def _report_action(request: HttpRequest, node: Node, action: str) -> None:
    """A drain the cluster could not finish (pods a disruption budget keeps) is a warning, not a success."""
    blocked = (cluster_services.last_drain_report(node) or {}).get("blocked") if action == "drain" else None
    if blocked:
        messages.warning(request, f"{node.name}: drained, but {len(blocked)} pod(s) not evicted: {', '.join(sorted(blocked))}")
    else:
        messages.success(request, f"{node.name}: {action} done")


@login_required
def queues(request: HttpRequest) -> HttpResponse:
    """Per team and GPU model: guarantee, use, borrowing, waiting GPUs, oldest wait; members see their own teams."""
    user = signed_in(request)
    rows = teams.overview()
    if not is_operator(user):
        mine = set(Team.objects.filter(pk__in=member_team_ids(user)).values_list("slug", flat=True))
        rows = [r for r in rows if r.team in mine]
    oldest = {
        (slug, model): submitted
        for slug, model, submitted in Job.objects.filter(state__in=WAITING)
        .order_by("-submitted_at")
        .values_list("team__slug", "gpu_model", "submitted_at")
    }
    table = [(r, oldest.get((r.team, r.gpu_model))) for r in rows]
    bursts = BurstProposal.objects.filter(state__in=[BurstState.PROPOSED, BurstState.PROVISIONING, BurstState.ACTIVE])
    return render(request, "bursting/queues.html", {"table": table, "bursts": bursts if is_operator(user) else []})


@login_required
def bursts(request: HttpRequest) -> HttpResponse:
    _operator_page(request)
    found = BurstProposal.objects.select_related("instance_type", "policy")[:100]
    return render(request, "bursting/bursts.html", {"bursts": found})


@login_required
def burst_detail(request: HttpRequest, burst_id: int) -> HttpResponse:
    _operator_page(request)
    burst = BurstProposal.objects.select_related("instance_type", "policy").filter(pk=burst_id).first()
    if burst is None:
        raise Http404("No such burst")
    events = BurstEvent.objects.filter(burst=burst).order_by("at", "id")
    context = {"burst": burst, "events": events, "nodes": burst.burst_nodes.all(), "p": burst.projection}
    return render(request, "bursting/burst.html", context)


@login_required
@require_POST
def approve(request: HttpRequest, burst_id: int) -> HttpResponse:
    _operator_action(request)
    try:
        services.approve(
            request.user, burst_id, request.POST.get("nodes"), request.POST.get("max_hours"), request.POST.get("reason", "")
        )
    except services.BurstActionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Burst #{burst_id} approved: provisioning")
    return redirect("console_burst", burst_id=burst_id)


@login_required
@require_POST
def reject(request: HttpRequest, burst_id: int) -> HttpResponse:
    _operator_action(request)
    try:
        services.reject(request.user, burst_id, request.POST.get("reason", ""))
    except services.BurstActionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Burst #{burst_id} rejected")
    return redirect("console_burst", burst_id=burst_id)


@login_required
def policies(request: HttpRequest) -> HttpResponse:
    _operator_page(request)
    found = BurstPolicy.objects.prefetch_related("instance_types", "allowed_teams")
    return render(request, "bursting/policies.html", {"policies": found})


@login_required
def policy_edit(request: HttpRequest, policy_id: int) -> HttpResponse:
    """GET: the policy's form. POST: save it through bursting.services.update_policy; errors come back by field."""
    _operator_page(request)
    policy = BurstPolicy.objects.filter(pk=policy_id).first()
    if policy is None:
        raise Http404("No such policy")
    errors: dict[str, list[str]] = {}
    values = services.policy_json(policy)
    if request.method == "POST":
        values = {
            **{k: request.POST.get(k, values[k]) for k in ("name", "gpu_model", "auto_approve_below", *services.POLICY_FIELDS)},
            "enabled": request.POST.get("enabled") == "on",
            "instance_types": request.POST.getlist("instance_types"),
            "allowed_teams": request.POST.getlist("allowed_teams"),
        }
        try:
            services.update_policy(request.user, policy.pk, values)
        except services.PolicyError as exc:
            errors = exc.errors
        else:
            messages.success(request, f"Burst policy {values['name']} saved")
            return redirect("console_policies")
    context = {
        "policy": policy, "values": values, "errors": errors, "numbers": [(f, values.get(f, "")) for f in services.POLICY_FIELDS],
        "instance_types": InstanceType.objects.all(), "teams": Team.objects.order_by("slug"),
    }  # fmt: skip
    return render(request, "bursting/policy.html", context)


@login_required
def recovery_page(request: HttpRequest) -> HttpResponse:
    _operator_page(request)
    snapshots, restores = recovery.listing(request.user)
    return render(request, "recovery/snapshots.html", {"snapshots": snapshots, "restores": restores})


@login_required
@require_POST
def restore(request: HttpRequest, snapshot_id: int) -> HttpResponse:
    _operator_action(request)
    try:
        done = recovery.restore(request.user, snapshot_id, request.POST.get("job", ""))
    except (recovery.RecoveryInputError, recovery.RecoveryError) as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Job #{done.job_id}: checkpoints restored from snapshot #{snapshot_id}; it waits to resume")
    return redirect("console_recovery")


@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    _operator_page(request)
    chosen = audit.parse_filter(request.GET)
    context = {"rows": audit.rows(chosen), "f": chosen, "kinds": audit.KINDS, "query": request.GET.urlencode()}
    return render(request, "bursting/audit.html", context)


@login_required
def audit_csv(request: HttpRequest) -> HttpResponse:
    _operator_page(request)
    found = audit.rows(audit.parse_filter(request.GET), limit=100_000)
    response = HttpResponse(audit.as_csv(found), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-{date.today():%Y%m%d}.csv"'
    return response
