from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import models
from django.http import HttpRequest

from guardsite.admin import ReadOnlyAdmin
from moderation.models import (
    ApiKey,
    AuditLog,
    Decision,
    Item,
    ReviewTask,
    Verdict,
    WebhookAttempt,
    WebhookDelivery,
)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created on /api-keys/ (the secret is shown once there) and revoked, never deleted."""

    list_display = ("name", "prefix", "created_by", "created_at", "last_used_at", "revoked_at", "rate_limit_per_minute")
    list_filter = ("revoked_at", "created_at")
    search_fields = ("name", "prefix")
    fields = ("name", "prefix", "rate_limit_per_minute", "webhook_url", "created_by", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_by", "created_at", "last_used_at", "revoked_at")
    # A webhook URL typed without a scheme is https (Django 6's default, and what a webhook should use); the form
    # field otherwise warns of that change on every edit.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class VerdictInline(admin.StackedInline):
    model = Verdict
    can_delete = False
    extra = 0
    exclude = ("raw_output",)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Item)
class ItemAdmin(ReadOnlyAdmin):
    list_display = ("id", "policy_version", "status", "mode", "origin", "client", "external_id", "attempts", "created_at")
    list_filter = ("status", "mode", "origin", "policy_version__policy", "created_at")
    search_fields = ("=id", "external_id", "prompt")
    list_select_related = ("policy_version__policy", "client")
    date_hierarchy = "created_at"
    inlines = [VerdictInline]


@admin.register(Verdict)
class VerdictAdmin(ReadOnlyAdmin):
    list_display = ("item_id", "action", "prompt_label", "response_label", "refusal_label", "categories", "confidence", "model_label", "mode", "created_at")
    list_filter = ("action", "prompt_label", "response_label", "mode", "model_label", "created_at")
    search_fields = ("=item__id", "explanation")
    date_hierarchy = "created_at"


@admin.register(ReviewTask)
class ReviewTaskAdmin(ReadOnlyAdmin):
    list_display = ("id", "item_id", "reason", "state", "priority", "claimed_by", "claim_expires_at", "created_at", "completed_at")
    list_filter = ("state", "reason", "created_at")
    search_fields = ("=item__id", "claimed_by__username")
    list_select_related = ("claimed_by",)


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdmin):
    list_display = ("id", "item_id", "reviewer", "outcome", "prompt_label", "response_label", "categories", "created_at")
    list_filter = ("outcome", "prompt_label", "reviewer", "created_at")
    search_fields = ("=item__id", "reviewer__username", "note")
    list_select_related = ("reviewer",)
    date_hierarchy = "created_at"


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = ("at", "actor_label", "action", "object_type", "object_id")
    list_filter = ("action", "object_type", "at")
    search_fields = ("actor_label", "action", "object_id")
    date_hierarchy = "at"


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    can_delete = False
    extra = 0

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    """History: redeliver from the key's Deliveries page (/api-keys/<id>/webhook/), which audits it."""

    list_display = ("pk", "client", "event", "item", "status", "created_at", "finished_at")
    list_filter = ("status", "event", "created_at")
    search_fields = ("client__name", "client__prefix", "event_id")
    inlines = [WebhookAttemptInline]
