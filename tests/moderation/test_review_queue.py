"""The review queue as a list (/review/queue/): filters, sorting, paging and picking an item."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from moderation import review
from moderation.models import ReviewTask
from tests.moderation.conftest import guard_verdict, publish_policy


def listed(response) -> list[int]:
    """Task ids in the order the page lists them."""
    import re

    return [int(n) for n in re.findall(r'<tr data-task-id="(\d+)"', response.content.decode())]


@pytest.fixture
def mixed_queue(judged_item, house_policy):
    """Four waiting tasks: flagged S2 (0.9), flagged S2 (0.7), uncertain safe (0.5), and one of another policy."""
    strong = judged_item("strong flag", guard_verdict(confidence=0.9))
    weak = judged_item("weak flag", guard_verdict(confidence=0.7))
    unsure = judged_item("unsure", guard_verdict(prompt_label="safe", categories=(), confidence=0.5))
    other_version = publish_policy("other")
    from moderation.models import Item
    from moderation.verdicts import category_actions, store_verdict

    other = Item.objects.create(policy_version=other_version, prompt="other policy", status=Item.Status.RUNNING, attempts=1)
    store_verdict(other, guard_verdict(confidence=0.8), category_actions(other_version), "embedded", 12)
    return {name: ReviewTask.objects.get(item=item) for name, item in
            {"strong": strong, "weak": weak, "unsure": unsure, "other": other}.items()}


def test_the_queue_list_shows_every_waiting_item_in_queue_order(client_as, mixed_queue):
    response = client_as("reviewer").get("/review/queue/")
    assert response.status_code == 200
    expected = list(ReviewTask.objects.order_by("priority", "id").values_list("pk", flat=True))
    assert listed(response) == expected and len(expected) == 4


def test_the_queue_list_filters_by_policy(client_as, mixed_queue):
    assert listed(client_as("reviewer").get("/review/queue/", {"policy": "other"})) == [mixed_queue["other"].pk]


def test_the_queue_list_filters_by_reason_for_review(client_as, mixed_queue):
    assert listed(client_as("reviewer").get("/review/queue/", {"reason": "uncertain"})) == [mixed_queue["unsure"].pk]


def test_the_queue_list_filters_by_category(client_as, mixed_queue, judged_item):
    s3 = ReviewTask.objects.get(item=judged_item("S2 and S3", guard_verdict(categories=("S2", "S3"), confidence=0.95)))
    assert listed(client_as("reviewer").get("/review/queue/", {"category": "S3"})) == [s3.pk]


def test_the_queue_list_filters_by_a_guard_confidence_range(client_as, mixed_queue):
    response = client_as("reviewer").get("/review/queue/", {"confidence_min": "0.6", "confidence_max": "0.85", "sort": "confidence"})
    assert listed(response) == [mixed_queue["weak"].pk, mixed_queue["other"].pk]


def test_the_queue_list_sorts_by_confidence_both_ways(client_as, mixed_queue):
    client = client_as("reviewer")
    order = ["unsure", "weak", "other", "strong"]
    assert listed(client.get("/review/queue/", {"sort": "confidence"})) == [mixed_queue[n].pk for n in order]
    assert listed(client.get("/review/queue/", {"sort": "-confidence"})) == [mixed_queue[n].pk for n in reversed(order)]


def test_the_queue_list_sorts_by_age(client_as, mixed_queue):
    now = timezone.now()
    for hours, name in enumerate(["other", "unsure", "strong", "weak"]):
        ReviewTask.objects.filter(pk=mixed_queue[name].pk).update(created_at=now - timedelta(hours=10 - hours))
    client = client_as("reviewer")
    assert listed(client.get("/review/queue/", {"sort": "oldest"})) == [mixed_queue[n].pk for n in ["other", "unsure", "strong", "weak"]]
    assert listed(client.get("/review/queue/", {"sort": "newest"})) == [mixed_queue[n].pk for n in ["weak", "strong", "unsure", "other"]]


def test_the_queue_list_is_paginated(client_as, flagged_tasks):
    tasks = flagged_tasks(27)
    client = client_as("reviewer")
    first = client.get("/review/queue/")
    assert listed(first) == [t.pk for t in tasks[:25]] and "page 1 of 2" in first.content.decode()
    assert listed(client.get("/review/queue/", {"page": 2})) == [t.pk for t in tasks[25:]]


@pytest.mark.parametrize("params, message", [
    ({"confidence_min": "high"}, "P(unsafe) from must be a number between 0 and 1"),
    ({"confidence_max": "7"}, "P(unsafe) to must be between 0 and 1"),
    ({"confidence_min": "0.8", "confidence_max": "0.2"}, "P(unsafe) from (0.8) is above P(unsafe) to (0.2)"),
    ({"sort": "random"}, "sort must be one of"),
    ({"reason": "bored"}, "reason must be one of"),
])
def test_a_filter_that_cannot_apply_is_refused_naming_it(client_as, params, message):
    response = client_as("reviewer").get("/review/queue/", params)
    assert response.status_code == 400 and message in response.content.decode()


def test_items_claimed_by_others_are_listed_as_claimed_not_as_waiting(client_as, flagged_tasks, make_user):
    first, second = flagged_tasks(2)
    review.claim_next(make_user("colleague", "reviewer"))
    client = client_as("reviewer")
    assert listed(client.get("/review/queue/")) == [second.pk]
    claimed = client.get("/review/queue/", {"state": "claimed"})
    assert listed(claimed) == [first.pk] and "claimed by colleague" in claimed.content.decode()


def test_picking_an_item_claims_it_and_opens_it_for_review(client_as, flagged_tasks, role_users):
    first, second = flagged_tasks(2)
    response = client_as("reviewer").post(f"/review/{second.pk}/pick/")
    assert response.status_code == 302 and response["Location"] == f"/review/{second.pk}/"
    second.refresh_from_db()
    assert (second.state, second.claimed_by) == (ReviewTask.State.CLAIMED, role_users["reviewer"])
    page = client_as("reviewer").get(response["Location"])
    assert f'data-task-id="{second.pk}"' in page.content.decode()


def test_an_item_claimed_by_another_reviewer_cannot_be_picked(client_as, flagged_tasks, make_user):
    (task,) = flagged_tasks(1)
    review.claim_next(make_user("colleague", "reviewer"))
    response = client_as("reviewer").post(f"/review/{task.pk}/pick/")
    assert response.status_code == 409
    assert f"item {task.item_id} is claimed by colleague" in response.content.decode()
    task.refresh_from_db()
    assert task.claimed_by.username == "colleague"


def test_an_item_whose_claim_expired_can_be_picked(client_as, flagged_tasks, make_user, role_users):
    (task,) = flagged_tasks(1)
    review.claim_next(make_user("colleague", "reviewer"))
    ReviewTask.objects.filter(pk=task.pk).update(claim_expires_at=timezone.now() - timedelta(seconds=1))
    assert client_as("reviewer").post(f"/review/{task.pk}/pick/").status_code == 302
    task.refresh_from_db()
    assert task.claimed_by == role_users["reviewer"]


def test_picking_another_item_hands_the_held_one_back_and_says_so(client_as, flagged_tasks, role_users):
    first, second = flagged_tasks(2)
    review.claim_next(role_users["reviewer"])
    client = client_as("reviewer")
    response = client.post(f"/review/{second.pk}/pick/", follow=True)
    assert f"Item {first.item_id}, which you held, went back to the queue." in response.content.decode()
    first.refresh_from_db()
    assert first.state == ReviewTask.State.OPEN and first.claimed_by is None


def test_a_reviewer_cannot_pick_the_second_review_of_an_item_they_decided(client_as, judged_item, settings, role_users):
    settings.MODERATION_DOUBLE_REVIEW_RATE = 1.0
    item = judged_item("needs two reviews")
    flag, double = ReviewTask.objects.filter(item=item).order_by("priority")
    reviewer = role_users["reviewer"]
    review.claim_task(flag.pk, reviewer)
    review.decide(flag.pk, reviewer, "agree")
    client = client_as("reviewer")
    assert "you reviewed it" in client.get("/review/queue/").content.decode()
    response = client.post(f"/review/{double.pk}/pick/")
    assert response.status_code == 409 and "its second review must come from another reviewer" in response.content.decode()


def test_a_decided_item_cannot_be_picked(client_as, flagged_tasks, make_user):
    (task,) = flagged_tasks(1)
    colleague = make_user("colleague", "reviewer")
    review.claim_next(colleague)
    review.decide(task.pk, colleague, "agree")
    response = client_as("reviewer").post(f"/review/{task.pk}/pick/")
    assert response.status_code == 409 and "was already decided" in response.content.decode()


def test_picking_a_task_that_does_not_exist_is_a_404(client_as, db):
    assert client_as("reviewer").post("/review/999999/pick/").status_code == 404


@pytest.mark.parametrize("role, status", [("viewer", 403), ("policy_editor", 403), ("reviewer", 200), ("admin", 200)])
def test_only_reviewers_and_admins_see_the_queue_list(client_as, role, status):
    assert client_as(role).get("/review/queue/").status_code == status


@pytest.mark.browser
def test_a_reviewer_filters_the_list_picks_an_item_and_decides_it(signed_in_page, mixed_queue):
    from playwright.sync_api import expect

    page = signed_in_page("reviewer")
    page.goto("/review/")
    page.click("#queue-list-link")
    page.select_option("select[name=reason]", "uncertain")
    page.click("#queue-filters button[type=submit]")
    rows = page.locator("#queue-results tbody tr")
    expect(rows).to_have_count(1)
    rows.first.get_by_role("button", name="Review").click()

    panel = page.locator("#review-panel")
    expect(panel).to_have_attribute("data-task-id", str(mixed_queue["unsure"].pk))
    page.keyboard.press("a")
    expect(panel).not_to_have_attribute("data-task-id", str(mixed_queue["unsure"].pk))
    assert ReviewTask.objects.get(pk=mixed_queue["unsure"].pk).state == ReviewTask.State.DONE


def test_the_queue_shows_the_probability_of_the_flagged_text_and_names_it(client_as, judged_item):
    verdict = guard_verdict(prompt_label="unsafe", categories=("S2",), confidence=0.12, response_label="safe", refusal_label="refusal")
    verdict.probabilities = {"prompt": {"safe": 0.22, "unsafe": 0.78}, "response": {"safe": 0.88, "unsafe": 0.12}}
    item = judged_item("Where does my customer live?", verdict, response="I can't help with that.")
    html = client_as("reviewer").get("/review/queue/").content.decode()
    row = html[html.index(f'data-item-id="{item.pk}"'):]
    cell = row[row.index('class="confidence"'):row.index("</td>", row.index('class="confidence"'))]
    assert "prompt" in cell and "0.78" in cell and "0.12" not in cell  # not the response's P(unsafe), which reads as safe
