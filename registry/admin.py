"""The registry in the admin: read-only. Versions never change; aliases move only through the
services (the API and the model page), which record every move."""

from __future__ import annotations

from django.contrib import admin

from .models import AliasChange, ModelAlias, ModelVersion, RegisteredModel


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ModelAliasInline(admin.TabularInline):
    model = ModelAlias
    fields = ("name", "version", "updated_by", "updated_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(RegisteredModel)
class RegisteredModelAdmin(ReadOnlyAdmin):
    list_display = ("name", "owner", "created_at")
    list_filter = ("created_at",)
    search_fields = ("name", "owner__username", "description")
    list_select_related = ("owner",)
    inlines = [ModelAliasInline]


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = (
        "model",
        "version",
        "source_run_id",
        "trainer",
        "dataset",
        "primary_score",
        "total_size",
        "created_at",
    )
    list_filter = ("trainer", "created_at")
    search_fields = ("model__name", "model__owner__username", "trainer", "dataset", "source_run_id")
    list_select_related = ("model",)


@admin.register(AliasChange)
class AliasChangeAdmin(ReadOnlyAdmin):
    list_display = ("model", "alias", "from_version", "to_version", "changed_by", "changed_at", "reason")
    list_filter = ("changed_at",)
    search_fields = ("model__name", "alias", "changed_by__username")
    list_select_related = ("model", "changed_by")
