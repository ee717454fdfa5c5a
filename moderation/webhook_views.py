"""A key's webhook deliveries: each event, its attempts (status code, duration, error) and Redeliver."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST, require_safe

from guardsite.roles import ADMIN, role_required
from moderation import webhooks
from moderation.models import ApiKey, AuditLog, WebhookDelivery

RECENT_DELIVERIES = 50


@role_required(ADMIN)
@require_safe
def deliveries(request: HttpRequest, key_id: int) -> HttpResponse:
    key = get_object_or_404(ApiKey, pk=key_id)
    recent = (
        WebhookDelivery.objects.filter(client=key)
        .select_related("requested_by", "redelivery_of")
        .prefetch_related("attempts")[:RECENT_DELIVERIES]
    )
    counts = {status: 0 for status in WebhookDelivery.Status.values}
    for status in WebhookDelivery.objects.filter(client=key).values_list("status", flat=True):
        counts[status] += 1
    return render(
        request,
        "moderation/webhook_deliveries.html",
        {"key": key, "deliveries": recent, "counts": counts, "shown": RECENT_DELIVERIES},
    )


@role_required(ADMIN)
@require_POST
def redeliver(request: HttpRequest, key_id: int, delivery_id: int) -> HttpResponse:
    original = get_object_or_404(WebhookDelivery.objects.select_related("client"), pk=delivery_id, client_id=key_id)
    try:
        again = webhooks.redeliver(original, request.user)
    except webhooks.CannotRedeliver as exc:
        messages.error(request, f"Not redelivered: {exc}.")
        return redirect("moderation:webhook-deliveries", key_id=key_id)
    AuditLog.record(
        request.user,
        "webhook.redeliver",
        again,
        before={"delivery": original.pk, "status": original.status},
        after={"delivery": again.pk, "event": again.event, "event_id": str(again.event_id), "url": again.url},
    )
    messages.success(request, f"Delivery #{original.pk} ({original.event}) queued again as #{again.pk}.")
    return redirect("moderation:webhook-deliveries", key_id=key_id)
