"""Per-client webhooks: an HMAC-signed POST when a verdict or a human decision is made.

Signature header (Stripe style, so clients can reject replays)::

    X-Guardsite-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
from django.db import transaction

from moderation import conf, task_names
from moderation.models import Item

SIGNATURE_HEADER = "X-Guardsite-Signature"
EVENT_HEADER = "X-Guardsite-Event"


class DeliveryFailed(Exception):
    """The endpoint did not answer 2xx (retried by the task)."""


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


def announce(item: Item, event: str) -> None:
    """Queue a delivery once the current transaction commits (nothing is sent for a rollback)."""
    client = item.client
    if client is None or not client.webhook_url:
        return
    item_id = item.pk
    transaction.on_commit(lambda: task_names.queue(task_names.DELIVER_WEBHOOK, item_id, event))


def deliver(item_id: int, event: str) -> int:
    """POST the item's current state to its client's webhook; returns the HTTP status.

    Raises ``DeliveryFailed`` for a non-2xx answer or a network error.
    """
    from moderation.serializers import item_json

    item = Item.objects.select_related("client", "policy_version__policy").get(pk=item_id)
    client = item.client
    if client is None or not client.webhook_url or client.revoked_at is not None:
        return 0
    body = json.dumps({"event": event, "item": item_json(item)}, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        EVENT_HEADER: event,
        SIGNATURE_HEADER: sign(client.webhook_secret, body, int(time.time())),
    }
    try:
        answer = httpx.post(client.webhook_url, content=body, headers=headers, timeout=conf.webhook_timeout_seconds())
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{client.webhook_url}: {exc}") from exc
    if not 200 <= answer.status_code < 300:
        raise DeliveryFailed(f"{client.webhook_url} answered {answer.status_code}")
    return answer.status_code
