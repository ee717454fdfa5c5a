from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from guard.models import ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """Read-only: promotion and rollback go through the model pages (regression gate, registry events)."""

    list_display = ("name", "status", "base_model_path", "adapter_path", "created_at", "promoted_at")
    list_filter = ("status", "created_at")
    search_fields = ("name", "adapter_path")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
