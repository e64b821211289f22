from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from portal.models import ApiToken, Department, Membership, Team, User


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    fieldsets = (*(UserAdmin.fieldsets or ()), ("Grid roles", {"fields": ("is_operator", "is_finance", "unix_username")}))
    list_display = ["username", "email", "is_operator", "is_finance", "is_staff"]


@admin.register(Department)
class DepartmentAdmin(admin.ModelAdmin):
    list_display = ["slug", "name"]
    search_fields = ["slug", "name"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "department"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["key_hash", "prefix", "created_at", "last_used_at"]


class ReadOnlyAdmin(admin.ModelAdmin):
    """An admin page that shows rows but never writes them.

    For models whose changes must go through their service (an audit row, a state transition, a
    capacity check): quotas on team pages and /api/v1/quotas/, nodes in the operator console.
    Audit trails use it too: they are append-only.
    """

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False
