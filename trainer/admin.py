from __future__ import annotations

from django.contrib import admin

from guardsite.admin import ReadOnlyAdmin
from trainer.models import RegistryEvent, TrainingJob


@admin.register(TrainingJob)
class TrainingJobAdmin(ReadOnlyAdmin):
    """Jobs are started, cancelled and resumed on /training/."""

    list_display = ("id", "recipe", "status", "stage", "step", "total_steps", "policy", "created_by", "created_at", "finished_at", "candidate")
    list_filter = ("status", "recipe", "created_at")
    search_fields = ("=id", "policy", "created_by__username")
    list_select_related = ("created_by", "candidate")


@admin.register(RegistryEvent)
class RegistryEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "action", "model_version", "previous", "user", "note")
    list_filter = ("action", "created_at")
    search_fields = ("model_version__name", "previous", "note", "user__username")
    list_select_related = ("model_version", "user")
