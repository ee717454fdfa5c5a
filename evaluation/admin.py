from __future__ import annotations

from django.contrib import admin

from evaluation.models import EvaluationRun
from guardsite.admin import ReadOnlyAdmin


@admin.register(EvaluationRun)
class EvaluationRunAdmin(ReadOnlyAdmin):
    """Runs are started on /evaluations/; their reports never change."""

    list_display = ("id", "model", "mode", "policy", "status", "done", "total", "created_by", "created_at", "finished_at")
    list_filter = ("status", "mode", "created_at")
    search_fields = ("=id", "model", "policy")
    list_select_related = ("created_by",)
