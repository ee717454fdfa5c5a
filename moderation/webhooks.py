"""Per-client webhooks: an HMAC-signed POST when a verdict or a human decision is made.

Every event is a ``WebhookDelivery`` with its ``WebhookAttempt`` rows (status code,
duration, error), listed per key at ``/api-keys/<id>/webhook/`` with a Redeliver button.

Signature header (Stripe style, so clients can reject replays)::

    X-Guardsite-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from moderation import conf, task_names
from moderation.models import Item, WebhookAttempt, WebhookDelivery

SIGNATURE_HEADER = "X-Guardsite-Signature"
EVENT_HEADER = "X-Guardsite-Event"
DELIVERY_HEADER = "X-Guardsite-Delivery"  # the event's id, the same for its redeliveries


class DeliveryFailed(Exception):
    """The endpoint did not answer 2xx (retried by the task)."""


class CannotRedeliver(Exception):
    """The delivery's key can no longer receive webhooks."""


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance_s: int = 300, now: float | None = None) -> bool:
    """What a client runs on receipt: signature matches and is recent."""
    try:
        parts = dict(piece.split("=", 1) for piece in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


def announce(item: Item, event: str) -> WebhookDelivery | None:
    """Record a delivery and queue it once the current transaction commits (nothing is sent for a rollback)."""
    client = item.client
    if client is None or not client.webhook_url:
        return None
    delivery = WebhookDelivery.objects.create(client=client, item=item, event=event, url=client.webhook_url)
    _queue_on_commit(delivery.pk)
    return delivery


def redeliver(delivery: WebhookDelivery, user: object | None) -> WebhookDelivery:
    """A new delivery of the same event and payload (same ``event_id``), queued after commit.

    Raises ``CannotRedeliver`` when the key was revoked or has no webhook URL any more.
    """
    client = delivery.client
    if client.revoked_at is not None:
        raise CannotRedeliver(f"the key {client.name} ({client.prefix}) is revoked")
    if not client.webhook_url:
        raise CannotRedeliver(f"the key {client.name} ({client.prefix}) has no webhook URL")
    again = WebhookDelivery.objects.create(
        client=client,
        item=delivery.item,
        event=delivery.event,
        event_id=delivery.event_id,
        url=client.webhook_url,
        payload=delivery.payload,
        redelivery_of=delivery,
        requested_by=user if getattr(user, "pk", None) else None,
    )
    _queue_on_commit(again.pk)
    return again


def _queue_on_commit(delivery_id: int) -> None:
    transaction.on_commit(lambda: task_names.queue(task_names.DELIVER_WEBHOOK, delivery_id))


def deliver(delivery_id: int) -> int:
    """POST the delivery's payload to its client's webhook and record the attempt; returns the HTTP status.

    The payload is the item's state at the first attempt (retries and redeliveries
    send the same bytes' content). Returns 0, sending nothing, when the delivery is
    settled already or its key was revoked or lost its webhook URL. Raises
    ``DeliveryFailed`` for a non-2xx answer or a network error.
    """
    delivery = WebhookDelivery.objects.select_related("client").filter(pk=delivery_id).first()
    if delivery is None or delivery.status in (WebhookDelivery.Status.SUCCEEDED, WebhookDelivery.Status.SKIPPED):
        return 0
    client = delivery.client
    if not client.webhook_url or client.revoked_at is not None:
        _finish(delivery, WebhookDelivery.Status.SKIPPED)
        return 0
    if delivery.payload is None:
        delivery.payload = _payload(delivery)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(payload=delivery.payload)
    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        EVENT_HEADER: delivery.event,
        DELIVERY_HEADER: str(delivery.event_id),
        SIGNATURE_HEADER: sign(client.webhook_secret, body, int(time.time())),
    }
    attempt = WebhookAttempt(delivery=delivery, number=delivery.attempts.count() + 1, started_at=timezone.now())
    began = time.perf_counter()
    try:
        answer = httpx.post(client.webhook_url, content=body, headers=headers, timeout=conf.webhook_timeout_seconds())
    except httpx.HTTPError as exc:
        attempt.duration_ms = _elapsed_ms(began)
        attempt.error = f"{type(exc).__name__}: {exc}"[:500]
        _record(delivery, attempt)
        raise DeliveryFailed(f"{client.webhook_url}: {exc}") from exc
    attempt.duration_ms = _elapsed_ms(began)
    attempt.status_code = answer.status_code
    attempt.response_excerpt = answer.text[:500]
    if not 200 <= answer.status_code < 300:
        attempt.error = f"answered {answer.status_code}"
        _record(delivery, attempt)
        raise DeliveryFailed(f"{client.webhook_url} answered {answer.status_code}")
    _record(delivery, attempt, WebhookDelivery.Status.SUCCEEDED)
    return answer.status_code


def give_up(delivery_id: int) -> None:
    """Retries exhausted: the delivery is failed (it can still be redelivered by hand)."""
    delivery = WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING).first()
    if delivery is not None:
        _finish(delivery, WebhookDelivery.Status.FAILED)


def legacy_delivery(item_id: int, event: str) -> int | None:
    """A delivery row for a task message queued before deliveries were recorded (``deliver_webhook(item_id, event)``)."""
    item = Item.objects.select_related("client").filter(pk=item_id).first()
    if item is None or item.client is None or not item.client.webhook_url:
        return None
    return WebhookDelivery.objects.create(client=item.client, item=item, event=event, url=item.client.webhook_url).pk


def _payload(delivery: WebhookDelivery) -> dict:
    from moderation.serializers import item_json

    if delivery.item_id is None:
        return {"event": delivery.event, "item": None}
    item = Item.objects.select_related("client", "policy_version__policy").get(pk=delivery.item_id)
    return {"event": delivery.event, "item": item_json(item)}


def _record(delivery: WebhookDelivery, attempt: WebhookAttempt, status: str | None = None) -> None:
    for _ in range(3):
        try:
            with transaction.atomic():
                attempt.save()
                if status is not None:
                    _finish(delivery, status)
            return
        except IntegrityError:
            # A duplicate task message tried the same delivery at the same moment: number this try after it.
            attempt.pk = None
            attempt.number = (delivery.attempts.aggregate(last=Max("number"))["last"] or 0) + 1


def _finish(delivery: WebhookDelivery, status: str) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=status, finished_at=timezone.now())


def _elapsed_ms(began: float) -> int:
    return max(0, round((time.perf_counter() - began) * 1000))
