from django.contrib import admin

from recovery.models import Restore, Snapshot


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
    list_display = ("pk", "team", "kind", "name", "state", "taken_at", "size_bytes", "files", "expires_at")
    list_filter = ("kind", "state", "team")
    readonly_fields = ("taken_at", "ready_at", "deleted_at")


@admin.register(Restore)
class RestoreAdmin(admin.ModelAdmin):
    list_display = ("pk", "snapshot", "job", "state", "requested_by", "requested_at", "claim", "files")
    list_filter = ("state",)
