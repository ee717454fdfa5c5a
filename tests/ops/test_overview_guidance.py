"""The overview tells a newcomer what to do next, and its cards lead to their pages."""

from __future__ import annotations

import json
import re

from django.utils import timezone

from guard.models import ModelVersion
from moderation import keys
from moderation.models import Item, ReviewTask
from policies import presets
from policies.models import Policy
from tests.ops.conftest import publish_policy


def overview(client) -> str:
    return client.get("/").content.decode()


def steps(html: str) -> list[str]:
    return re.findall(r'<li class="next-step" data-step="([a-z-]+)"', html)


def step_html(html: str, key: str) -> str:
    return re.search(rf'data-step="{key}">(.*?)</li>', html, re.S).group(1)


def test_the_overview_cards_link_to_their_pages(client_as, house_policy):
    html = overview(client_as("viewer"))
    links = dict(re.findall(r'<a class="card stat" id="(stat-[a-z]+)" href="([^"]+)"', html))
    assert links == {
        "stat-items": "/items/",
        "stat-backlog": "/review/queue/",
        "stat-reviews": "/items/?review=reviewed",
        "stat-workers": "#workers",
    }
    assert 'id="workers"' in html


def test_with_no_policy_the_next_step_is_to_create_one_from_a_preset(client_as, db):
    html = overview(client_as("admin"))
    assert steps(html) == ["create-policy"]
    assert 'href="/policies/#create-policy"' in step_html(html, "create-policy")
    assert "preset" in step_html(html, "create-policy")


def test_a_viewer_is_told_who_can_create_the_first_policy(client_as, db):
    assert "Ask an admin or a policy editor" in step_html(overview(client_as("viewer")), "create-policy")


def test_with_only_a_draft_the_next_step_is_to_publish_it(client_as, db):
    Policy.create_from_spec(presets.preset_spec("general"), slug="house", name="House rules", preset="general")
    html = overview(client_as("admin"))
    assert steps(html) == ["publish-policy"]
    assert 'href="/policies/house/draft/#publish"' in step_html(html, "publish-policy")


def test_with_no_api_key_the_next_step_is_to_create_one(client_as, house_policy):
    html = overview(client_as("admin"))
    assert steps(html) == ["create-key"]
    assert 'href="/api-keys/"' in step_html(html, "create-key")
    assert "ask one" in step_html(overview(client_as("viewer")), "create-key")


def test_with_no_items_the_next_step_shows_a_curl_example_that_works(client_as, client, house_policy):
    _, secret = keys.create_key("my app")
    html = overview(client_as("admin"))
    assert steps(html) == ["send-item"]
    example = step_html(html, "send-item")
    assert "curl -X POST http://testserver/api/v1/items" in example and "Idempotency-Key" in example
    body = json.loads(re.search(r"-d &#x27;(.*?)&#x27;", example).group(1).replace("&quot;", '"'))
    assert body["policy"] == "house"
    response = client.post("/api/v1/items", body, content_type="application/json", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 202


def test_items_waiting_for_review_point_to_the_review_queue(client_as, judged):
    keys.create_key("my app")
    judged(review="flag")
    html = overview(client_as("reviewer"))
    assert "review" in steps(html)
    assert 'href="/review/queue/"' in step_html(html, "review") and "1 item waits" in step_html(html, "review")


def test_items_waiting_for_the_guard_without_a_worker_say_how_to_start_one(client_as, house_policy):
    keys.create_key("my app")
    Item.objects.create(policy_version=house_policy, prompt="hello")
    html = overview(client_as("viewer"))
    assert steps(html)[0] == "start-worker"
    assert "celery -A guardsite worker" in step_html(html, "start-worker")


def test_a_new_candidate_model_points_to_its_page_to_compare_and_promote(client_as, judged):
    keys.create_key("my app")
    judged()
    ModelVersion.objects.create(name="house-v1", status="production", promoted_at=timezone.now())
    ModelVersion.objects.create(name="house-v2")
    html = overview(client_as("viewer"))
    assert steps(html) == ["promote"]
    assert 'href="/models/house-v2/"' in step_html(html, "promote")


def test_when_everything_is_done_there_is_no_next_step(client_as, judged):
    keys.create_key("my app")
    judged()
    assert steps(overview(client_as("viewer"))) == []
    assert ReviewTask.objects.count() == 0


def test_the_polled_panels_keep_the_guidance(client_as, db):
    publish_policy("kids")
    html = client_as("admin").get("/", HTTP_HX_REQUEST="true").content.decode()
    assert steps(html) == ["create-key"]


def test_items_to_review_are_shown_beside_a_missing_setup_step(client_as, judged):
    judged(review="flag")
    assert steps(overview(client_as("admin"))) == ["create-key", "review"]
