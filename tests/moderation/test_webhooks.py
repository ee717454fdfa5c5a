"""Webhooks: signed with HMAC, sent after commit, retried a bounded number of times, each try recorded."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from moderation import review, webhooks
from moderation.models import AuditLog, WebhookDelivery
from moderation.tasks import deliver_webhook
from tests.moderation.conftest import guard_verdict


class Receiver:
    """A real HTTP endpoint on loopback answering with the given statuses in turn."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                answer = f"answer {status}".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    yield endpoint
    endpoint.server.shutdown()


@pytest.fixture
def hooked_item(receiver, make_key, judged_item):
    key, _ = make_key("hooked", webhook_url=receiver.url, webhook_secret="s3cret")
    return judged_item(client=key)


@pytest.fixture
def verdict_delivery(hooked_item) -> WebhookDelivery:
    """The delivery the item's verdict recorded (its task is queued on commit, which tests under ``db`` never reach)."""
    return WebhookDelivery.objects.get(item=hooked_item, event="verdict")


def test_delivery_is_signed_with_the_client_secret(receiver, hooked_item, verdict_delivery):
    assert webhooks.deliver(verdict_delivery.pk) == 200
    headers, body = receiver.received[0]
    assert webhooks.verify("s3cret", body, headers["X-Guardsite-Signature"])
    assert not webhooks.verify("wrong-secret", body, headers["X-Guardsite-Signature"])
    assert not webhooks.verify("s3cret", body + b" ", headers["X-Guardsite-Signature"])
    payload = json.loads(body)
    assert payload["event"] == "verdict" and payload["item"]["id"] == hooked_item.pk
    assert payload["item"]["verdict"]["action"] == "flag"


def test_an_old_signature_is_rejected(receiver, verdict_delivery):
    webhooks.deliver(verdict_delivery.pk)
    headers, body = receiver.received[0]
    timestamp = int(headers["X-Guardsite-Signature"].split(",")[0][2:])
    assert not webhooks.verify("s3cret", body, headers["X-Guardsite-Signature"], now=timestamp + 3600)


def test_a_failing_endpoint_is_retried_until_it_answers(receiver, verdict_delivery, settings):
    settings.MODERATION_WEBHOOK_MAX_RETRIES = 5
    receiver.statuses = [500, 503]
    deliver_webhook.apply(args=(verdict_delivery.pk,))
    assert len(receiver.received) == 3


def test_retries_are_bounded(receiver, verdict_delivery, settings):
    settings.MODERATION_WEBHOOK_MAX_RETRIES = 2
    receiver.statuses = [500] * 10
    result = deliver_webhook.apply(args=(verdict_delivery.pk,))
    assert len(receiver.received) == 3  # the first try and two retries
    assert result.successful()


def test_verdict_and_decision_webhooks_are_queued_after_commit(make_key, judged_item, make_user, django_capture_on_commit_callbacks):
    key, _ = make_key("hooked", webhook_url="http://127.0.0.1:9/unused", webhook_secret="x")
    with django_capture_on_commit_callbacks() as on_verdict:
        item = judged_item(client=key, verdict=guard_verdict(categories=("S2",)))
    alice = make_user("alice", "reviewer")
    task = review.claim_next(alice)
    with django_capture_on_commit_callbacks() as on_decision:
        review.decide(task.pk, alice, "agree")
    assert len(on_verdict) == 1 and len(on_decision) == 1
    assert item.client == key


def test_items_of_clients_without_a_webhook_send_nothing(judged_item, make_key, django_capture_on_commit_callbacks):
    key, _ = make_key("plain")
    with django_capture_on_commit_callbacks() as callbacks:
        judged_item(client=key)
    assert callbacks == []


# ----------------------------------------------------------------- delivery history


def test_each_try_is_recorded_with_its_status_code_duration_and_error(receiver, verdict_delivery, settings):
    settings.MODERATION_WEBHOOK_MAX_RETRIES = 5
    receiver.statuses = [500, 503]
    deliver_webhook.apply(args=(verdict_delivery.pk,))
    verdict_delivery.refresh_from_db()
    attempts = list(verdict_delivery.attempts.all())
    assert [a.status_code for a in attempts] == [500, 503, 200]
    assert [a.error for a in attempts] == ["answered 500", "answered 503", ""]
    assert attempts[2].response_excerpt == "answer 200"
    assert all(a.duration_ms >= 0 for a in attempts)
    assert verdict_delivery.status == WebhookDelivery.Status.SUCCEEDED and verdict_delivery.finished_at is not None


def test_a_delivery_whose_retries_run_out_is_failed(receiver, verdict_delivery, settings):
    settings.MODERATION_WEBHOOK_MAX_RETRIES = 1
    receiver.statuses = [502] * 5
    deliver_webhook.apply(args=(verdict_delivery.pk,))
    verdict_delivery.refresh_from_db()
    assert verdict_delivery.status == WebhookDelivery.Status.FAILED
    assert [a.status_code for a in verdict_delivery.attempts.all()] == [502, 502]


def test_an_endpoint_that_does_not_answer_is_recorded_as_a_network_error(make_key, judged_item):
    key, _ = make_key("nobody-home", webhook_url="http://127.0.0.1:9/hook", webhook_secret="x")
    delivery = WebhookDelivery.objects.get(item=judged_item(client=key))
    with pytest.raises(webhooks.DeliveryFailed):
        webhooks.deliver(delivery.pk)
    attempt = delivery.attempts.get()
    assert attempt.status_code is None
    assert "ConnectError" in attempt.error


def test_retries_and_redeliveries_send_the_first_attempts_payload_under_one_event_id(receiver, verdict_delivery, admin_user):
    receiver.statuses = [500]
    with pytest.raises(webhooks.DeliveryFailed):
        webhooks.deliver(verdict_delivery.pk)
    webhooks.deliver(verdict_delivery.pk)
    again = webhooks.redeliver(verdict_delivery, admin_user)
    webhooks.deliver(again.pk)
    bodies = [json.loads(body) for _, body in receiver.received]
    assert bodies[0] == bodies[1] == bodies[2]
    ids = {headers["X-Guardsite-Delivery"] for headers, _ in receiver.received}
    assert ids == {str(verdict_delivery.event_id)}


def test_a_settled_delivery_is_not_sent_twice(receiver, verdict_delivery):
    assert webhooks.deliver(verdict_delivery.pk) == 200
    assert webhooks.deliver(verdict_delivery.pk) == 0
    assert len(receiver.received) == 1


def test_a_message_queued_by_the_previous_release_is_still_delivered(receiver, hooked_item):
    deliver_webhook.apply(args=(hooked_item.pk, "decision"))
    delivery = WebhookDelivery.objects.get(item=hooked_item, event="decision")
    assert delivery.status == WebhookDelivery.Status.SUCCEEDED
    assert json.loads(receiver.received[0][1])["event"] == "decision"


def test_the_deliveries_page_lists_each_attempt(receiver, verdict_delivery, client_as, settings):
    settings.MODERATION_WEBHOOK_MAX_RETRIES = 3
    receiver.statuses = [503]
    deliver_webhook.apply(args=(verdict_delivery.pk,))
    page = client_as("admin").get(f"/api-keys/{verdict_delivery.client_id}/webhook/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'id="delivery-{verdict_delivery.pk}" data-status="succeeded"' in html
    assert ">503<" in html and ">200<" in html and "answered 503" in html and " ms<" in html
    assert "Redeliver" in html


def test_the_deliveries_page_is_for_admins(verdict_delivery, client_as):
    assert client_as("reviewer").get(f"/api-keys/{verdict_delivery.client_id}/webhook/").status_code == 403


def test_redeliver_queues_a_new_delivery_and_is_audited(verdict_delivery, client_as, django_capture_on_commit_callbacks):
    admin = client_as("admin")
    with django_capture_on_commit_callbacks() as queued:
        response = admin.post(f"/api-keys/{verdict_delivery.client_id}/webhook/deliveries/{verdict_delivery.pk}/redeliver/")
    assert response.status_code == 302
    again = WebhookDelivery.objects.get(redelivery_of=verdict_delivery)
    assert again.status == WebhookDelivery.Status.PENDING and again.event_id == verdict_delivery.event_id
    assert len(queued) == 1
    entry = AuditLog.objects.get(action="webhook.redeliver")
    assert entry.actor_label == "admin-user" and entry.before["delivery"] == verdict_delivery.pk and entry.after["delivery"] == again.pk


def test_redeliver_is_a_post(verdict_delivery, client_as):
    response = client_as("admin").get(f"/api-keys/{verdict_delivery.client_id}/webhook/deliveries/{verdict_delivery.pk}/redeliver/")
    assert response.status_code == 405


def test_redeliver_refuses_a_revoked_key_with_a_message(verdict_delivery, client_as):
    from django.utils import timezone

    type(verdict_delivery.client).objects.filter(pk=verdict_delivery.client_id).update(revoked_at=timezone.now())
    response = client_as("admin").post(f"/api-keys/{verdict_delivery.client_id}/webhook/deliveries/{verdict_delivery.pk}/redeliver/", follow=True)
    assert "Not redelivered: the key hooked" in response.content.decode()
    assert not WebhookDelivery.objects.filter(redelivery_of=verdict_delivery).exists()


def test_redeliver_of_another_keys_delivery_is_404(verdict_delivery, make_key, client_as):
    other, _ = make_key("other")
    response = client_as("admin").post(f"/api-keys/{other.pk}/webhook/deliveries/{verdict_delivery.pk}/redeliver/")
    assert response.status_code == 404


@pytest.mark.worker
def test_a_real_worker_delivers_and_redelivers_from_the_page(start_worker, receiver, make_key, judged_item, client_as):
    from tests.conftest import wait_for

    start_worker("default")
    key, _ = make_key("hooked", webhook_url=receiver.url, webhook_secret="s3cret")
    item = judged_item(client=key)  # transactional: the verdict's delivery is queued on commit
    delivery = WebhookDelivery.objects.get(item=item)
    wait_for(lambda: WebhookDelivery.objects.filter(pk=delivery.pk, status="succeeded").exists(), timeout=30, message="first delivery")
    client_as("admin").post(f"/api-keys/{key.pk}/webhook/deliveries/{delivery.pk}/redeliver/")
    wait_for(lambda: WebhookDelivery.objects.filter(redelivery_of=delivery, status="succeeded").exists(), timeout=30, message="redelivery")
    assert len(receiver.received) == 2
    page = client_as("admin").get(f"/api-keys/{key.pk}/webhook/").content.decode()
    assert f"redelivery of #{delivery.pk} by admin-user" in page
