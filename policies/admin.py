from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from guardsite.admin import ReadOnlyAdmin
from policies.models import Category, Policy, PolicyVersion


@admin.register(Policy)
class PolicyAdmin(ReadOnlyAdmin):
    """Policies are edited, published and assigned a model on their own pages (checked and versioned)."""

    list_display = ("slug", "name", "owner", "production_model", "created_at")
    list_filter = ("production_model",)
    search_fields = ("slug", "name")


class CategoryInline(admin.TabularInline):
    model = Category
    fields = ("position", "code", "name", "severity", "action")
    extra = 0
    can_delete = False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(PolicyVersion)
class PolicyVersionAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "policy", "number", "published_at", "published_by", "change_note")
    list_filter = ("policy", "published_at")
    search_fields = ("policy__slug", "change_note")
    list_select_related = ("policy", "published_by")
    inlines = [CategoryInline]


# Display only (not a model option, so no migration): Django would say "Categorys".
Category._meta.verbose_name_plural = "categories"


@admin.register(Category)
class CategoryAdmin(ReadOnlyAdmin):
    list_display = ("code", "name", "version", "severity", "action")
    list_filter = ("severity", "action", "version__policy")
    search_fields = ("code", "name")
    list_select_related = ("version__policy",)
