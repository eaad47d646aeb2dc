from __future__ import annotations

from django.contrib import admin

from . import services
from .models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Staff see everyone's tokens and revoke any by deleting it ("Delete selected API tokens", or
    Delete on its page); the key itself is never stored, so it cannot be shown here."""

    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "expires_at")
    list_filter = ("created_at", "last_used_at", "expires_at")
    search_fields = ("name", "prefix", "user__username")
    list_select_related = ("user",)
    date_hierarchy = "created_at"
    fields = ("user", "name", "prefix", "created_at", "last_used_at", "expires_at")
    readonly_fields = ("user", "prefix", "created_at", "last_used_at")

    def has_add_permission(self, request) -> bool:
        # A token is created by its user, who alone sees the key (/accounts/tokens/).
        return False

    def delete_model(self, request, obj: ApiToken) -> None:
        services.token_revoke(token=obj)

    def delete_queryset(self, request, queryset) -> None:
        for token in queryset:
            services.token_revoke(token=token)
