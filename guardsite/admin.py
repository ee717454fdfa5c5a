"""Django admin defaults shared by the apps' admin modules."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

admin.site.site_header = "Guardsite administration"
admin.site.site_title = "Guardsite admin"
admin.site.index_title = "Data (changes go through the app's pages, where they are checked and audited)"


class ReadOnlyAdmin(admin.ModelAdmin):
    """For records that are immutable once written (verdicts, decisions, audit entries,
    published policy versions, registry events): browse and search, never add, edit or delete."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
