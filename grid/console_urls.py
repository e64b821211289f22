"""The operator console, mounted at /console/."""

from django.urls import path
from django.views.generic import RedirectView

from grid import console

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="console_nodes"), name="console"),
    path("nodes/", console.nodes, name="console_nodes"),
    path("nodes/<str:name>/", console.node_action, name="console_node_action"),
    path("queues/", console.queues, name="console_queues"),
    path("bursts/", console.bursts, name="console_bursts"),
    path("bursts/<int:burst_id>/", console.burst_detail, name="console_burst"),
    path("bursts/<int:burst_id>/approve/", console.approve, name="console_burst_approve"),
    path("bursts/<int:burst_id>/reject/", console.reject, name="console_burst_reject"),
    path("policies/", console.policies, name="console_policies"),
    path("policies/<int:policy_id>/", console.policy_edit, name="console_policy"),
    path("recovery/", console.recovery_page, name="console_recovery"),
    path("recovery/<int:snapshot_id>/restore/", console.restore, name="console_recovery_restore"),
    path("audit/", console.audit_log, name="console_audit"),
    path("audit.csv", console.audit_csv, name="console_audit_csv"),
]
