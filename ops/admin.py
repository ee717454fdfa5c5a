from __future__ import annotations

from django.contrib import admin

from guardsite.admin import ReadOnlyAdmin
from ops.models import WorkerHeartbeat


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    list_display = ("hostname", "pid", "queues", "seen_at", "started_at", "stopped_at")
    list_filter = ("stopped_at",)
    search_fields = ("hostname",)
