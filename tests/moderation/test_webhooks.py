"""Webhooks: signed with HMAC, sent after commit, retried a bounded number of times."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from moderation import review, webhooks
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
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.end_headers()

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


def test_delivery_is_signed_with_the_client_secret(receiver, hooked_item):
    assert webhooks.deliver(hooked_item.pk, "verdict") == 200
    headers, body = receiver.received[0]
    assert webhooks.verify("s3cret", body, headers["X-Guardsite-Signature"])
    assert not webhooks.verify("wrong-secret", body, headers["X-Guardsite-Signature"])
    assert not webhooks.verify("s3cret", body + b" ", headers["X-Guardsite-Signature"])
    payload = json.loads(body)
    assert payload["event"] == "verdict" and payload["item"]["id"] == hooked_item.pk
    assert payload["item"]["verdict"]["action"] == "flag"


def test_an_old_signature_is_rejected(receiver, hooked_item):
    webhooks.deliver(hooked_item.pk, "verdict")
    headers, body = receiver.received[0]
    timestamp = int(headers["X-Guardsite-Signature"].split(",")[0][2:])
    assert not webhooks.verify("s3cret", body, headers["X-Guardsite-Signature"], now=timestamp + 3600)


def test_a_failing_endpoint_is_retried_until_it_answers(receiver, hooked_item, settings):
    settings.MODERATION_WEBHOOK_MAX_RETRIES = 5
    receiver.statuses = [500, 503]
    deliver_webhook.apply(args=(hooked_item.pk, "verdict"))
    assert len(receiver.received) == 3


def test_retries_are_bounded(receiver, hooked_item, settings):
    settings.MODERATION_WEBHOOK_MAX_RETRIES = 2
    receiver.statuses = [500] * 10
    result = deliver_webhook.apply(args=(hooked_item.pk, "verdict"))
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
