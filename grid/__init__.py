"""The top layer: what spans every app. Settings and routing, the dashboard, team pages, the
operator console and audit log, health, metrics, websockets and the telemetry cycle.

Nothing below imports from here; see docs/architecture.md.
"""
