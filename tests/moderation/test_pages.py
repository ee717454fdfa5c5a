"""Pages: item browser and detail, review queue over HTTP, API keys; roles."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from moderation import keys
from moderation.models import ApiKey, AuditLog, Decision, Item, ReviewTask
from tests.moderation.conftest import ApiClient, guard_verdict, publish_policy

# ----------------------------------------------------------------- roles


def test_signed_out_visitors_are_sent_to_the_login_page(client):
    response = client.get("/items/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.parametrize("role", ["viewer", "reviewer", "policy_editor", "admin"])
def test_everyone_signed_in_can_browse_items(client_as, role, judged_item):
    item = judged_item()
    assert client_as(role).get("/items/").status_code == 200
    assert client_as(role).get(f"/items/{item.pk}/").status_code == 200


@pytest.mark.parametrize(("role", "status"), [("viewer", 403), ("policy_editor", 403), ("reviewer", 200), ("admin", 200)])
def test_only_reviewers_and_admins_can_open_the_review_queue(client_as, role, status):
    assert client_as(role).get("/review/").status_code == status


def test_a_viewer_cannot_claim_or_decide(client_as, flagged_tasks):
    (task,) = flagged_tasks(1)
    viewer = client_as("viewer")
    assert viewer.post("/review/next/").status_code == 403
    assert viewer.post(f"/review/{task.pk}/decide/", {"outcome": "agree"}).status_code == 403
    assert not Decision.objects.exists()


@pytest.mark.parametrize(("role", "status"), [("viewer", 403), ("reviewer", 403), ("policy_editor", 403), ("admin", 200)])
def test_only_admins_manage_api_keys(client_as, role, status):
    assert client_as(role).get("/api-keys/").status_code == status


# ----------------------------------------------------------------- item browser


def test_items_are_filtered_by_policy_label_category_status_and_date(client_as, judged_item, quiet_review):
    blocked = judged_item("blocked one", verdict=guard_verdict(categories=("S1",)))
    flagged = judged_item("flagged one", verdict=guard_verdict(categories=("S2",)))
    safe = judged_item("safe one", verdict=guard_verdict(prompt_label="safe", categories=(), confidence=0.01))
    other_version = publish_policy("other")
    pending = Item.objects.create(policy_version=other_version, prompt="still waiting", status=Item.Status.QUEUED)
    old = judged_item("old one", verdict=guard_verdict(categories=("S1",)))
    Item.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))
    viewer = client_as("viewer")

    def shown(**params: str) -> set[int]:
        html = viewer.get("/items/", params).content.decode()
        return {i.pk for i in (blocked, flagged, safe, pending, old) if f'data-item-id="{i.pk}"' in html}

    assert shown() == {blocked.pk, flagged.pk, safe.pk, pending.pk, old.pk}
    assert shown(policy="other") == {pending.pk}
    assert shown(label="safe") == {safe.pk}
    assert shown(label="unsafe", policy="house") == {blocked.pk, flagged.pk, old.pk}
    assert shown(category="S1") == {blocked.pk, old.pk}
    assert shown(status="queued") == {pending.pk}
    assert shown(action="flag") == {flagged.pk}
    assert shown(review="pending") == {flagged.pk}
    today = timezone.now().date()
    assert shown(date_from=str(today - timedelta(days=1))) == {blocked.pk, flagged.pk, safe.pk, pending.pk}
    assert shown(date_to=str(today - timedelta(days=5))) == {old.pk}


def test_filtering_with_htmx_returns_only_the_results(client_as, judged_item):
    judged_item()
    response = client_as("viewer").get("/items/", {"label": "unsafe"}, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert 'id="item-results"' in html and "<nav" not in html


def test_item_detail_highlights_the_violated_categories(client_as, judged_item):
    item = judged_item(verdict=guard_verdict(categories=("S2",), explanation="Asks how to do it; violates S2."))
    html = client_as("viewer").get(f"/items/{item.pk}/").content.decode()
    assert '<mark class="highlight">S2</mark>' in html
    assert 'class="highlight violated" data-code="S2"' in html
    assert 'data-code="S1"' in html and 'class="highlight violated" data-code="S1"' not in html
    assert "house@1" in html


def test_the_item_pages_audit_reads_as_keys_and_values_not_python_dicts(client_as, flagged_tasks, role_users):
    from moderation import review

    task = flagged_tasks(1)[0]
    reviewer = role_users["reviewer"]
    review.claim_next(reviewer)
    review.decide(task.pk, reviewer, "override", review.Labels("safe", categories=[]), note="a locksmith asking")
    html = client_as("viewer").get(f"/items/{task.item_id}/").content.decode()
    section = html[html.index('<section class="card audit">'):]
    assert "{'" not in section and "['" not in section
    assert "<dt>prompt_label</dt>" in section and "<del>unsafe</del> → <ins>safe</ins>" in section
    assert "<dt>note</dt>" in section and "a locksmith asking" in section


def test_failed_item_shows_why(client_as, house_policy):
    item = Item.objects.create(policy_version=house_policy, prompt="p", status=Item.Status.FAILED, attempts=3, last_error="gave up after 3 attempt(s)")
    assert "gave up after 3 attempt(s)" in client_as("viewer").get(f"/items/{item.pk}/").content.decode()


# ----------------------------------------------------------------- review over HTTP


def test_review_page_documents_the_keyboard_shortcuts(client_as):
    html = client_as("reviewer").get("/review/").content.decode()
    assert "Keyboard shortcuts" in html
    for key in ("j", "a", "o", "p", "r", "f", "c", "n", "u"):
        assert f'<span class="kbd">{key}</span>' in html


def test_claim_decide_and_next_over_htmx(client_as, flagged_tasks):
    first, second = flagged_tasks(2)
    reviewer = client_as("reviewer")
    htmx = {"HX-Request": "true"}
    panel = reviewer.post("/review/next/", headers=htmx).content.decode()
    assert f'data-task-id="{first.pk}"' in panel and "Flagged prompt number 0" in panel
    panel = reviewer.post(
        f"/review/{first.pk}/decide/",
        {"outcome": "override", "prompt_label": "unsafe", "categories": ["S1"], "category_codes": "s3", "note": "worse"},
        headers=htmx,
    ).content.decode()
    assert f'data-task-id="{second.pk}"' in panel  # submit and next
    decision = Decision.objects.get(task=first)
    assert (decision.outcome, decision.categories, decision.note) == ("override", ["S1", "S3"], "worse")
    assert AuditLog.objects.filter(action="review.override", object_id=str(first.item_id)).exists()


def test_an_invalid_override_keeps_the_item_and_says_why(client_as, flagged_tasks):
    (task,) = flagged_tasks(1)
    reviewer = client_as("reviewer")
    reviewer.post("/review/next/")
    panel = reviewer.post(f"/review/{task.pk}/decide/", {"outcome": "override", "prompt_label": "maybe"}, headers={"HX-Request": "true"}).content.decode()
    assert "is not one of safe, unsafe" in panel and f'data-task-id="{task.pk}"' in panel
    assert not Decision.objects.exists()


def test_review_without_htmx_redirects_to_the_claimed_item(client_as, flagged_tasks):
    (task,) = flagged_tasks(1)
    reviewer = client_as("reviewer")
    response = reviewer.post("/review/next/")
    assert response.status_code == 302 and response["Location"] == f"/review/{task.pk}/"
    assert "Flagged prompt number 0" in reviewer.get(response["Location"]).content.decode()
    assert reviewer.post(f"/review/{task.pk}/decide/", {"outcome": "agree"}).status_code == 302
    assert ReviewTask.objects.get(pk=task.pk).state == "done"


def test_agreement_page_shows_kappa_tables(client_as):
    html = client_as("reviewer").get("/review/agreement/").content.decode()
    assert "Cohen's kappa" in html and "per reviewer" in html and "Per category" in html


# ----------------------------------------------------------------- API keys


def test_a_created_key_is_shown_once_and_only_its_hash_is_stored(client_as):
    admin = client_as("admin")
    html = admin.post("/api-keys/", {"name": "frontend", "rate_limit_per_minute": "120", "webhook_url": "https://example.com/hook"}).content.decode()
    key = ApiKey.objects.get(name="frontend")
    secret = html.split('<pre id="new-key-secret">')[1].split("</pre>")[0]
    assert keys.hash_secret(secret) == key.key_hash
    assert key.rate_limit_per_minute == 120 and key.webhook_secret
    assert secret not in admin.get("/api-keys/").content.decode()
    assert AuditLog.objects.filter(action="api_key.create", object_id=str(key.pk)).exists()


def test_a_key_without_a_name_is_refused(client_as):
    response = client_as("admin").post("/api-keys/", {"name": ""})
    assert response.status_code == 422 and "A name is required" in response.content.decode()


def test_a_revoked_key_stops_working_at_once(client_as, make_key, house_policy):
    key, secret = make_key("doomed")
    assert ApiClient(secret).get("/api/v1/items").status_code == 200
    client_as("admin").post(f"/api-keys/{key.pk}/revoke/")
    assert ApiClient(secret).get("/api/v1/items").json()["error"] == "revoked_api_key"
    assert AuditLog.objects.filter(action="api_key.revoke", object_id=str(key.pk)).exists()


def test_an_override_posts_each_texts_categories_and_typed_codes_go_to_the_text_the_keys_were_on(client_as, judged_item):
    item = judged_item("Write malware", response="Sure, here it is", verdict=guard_verdict(prompt_label="unsafe", response_label="unsafe", refusal_label="compliance"))
    reviewer = client_as("reviewer")
    reviewer.post("/review/next/")
    task = item.review_tasks.get()
    reviewer.post(f"/review/{task.pk}/decide/", {
        "outcome": "override", "prompt_label": "unsafe", "response_label": "unsafe", "refusal_label": "compliance",
        "prompt_categories": ["S2"], "response_categories": ["S1"], "category_field": "response", "category_codes": "s3",
    })
    decision = Decision.objects.get(task=task)
    assert (decision.prompt_categories, decision.response_categories) == (["S2"], ["S1", "S3"])


def test_reloading_the_address_of_a_decided_item_opens_the_item_the_reviewer_holds(client_as, flagged_tasks):
    first, second = flagged_tasks(2)
    reviewer = client_as("reviewer")
    reviewer.post("/review/next/")
    reviewer.post(f"/review/{first.pk}/decide/", {"outcome": "agree"})  # submit and next: claims the second
    response = reviewer.get(f"/review/{first.pk}/", follow=True)
    assert response.redirect_chain[-1][0] == f"/review/{second.pk}/"
    page = response.content.decode()
    assert f'data-task-id="{second.pk}"' in page and "was already decided" in page and "not claimed by you" not in page


def test_a_decision_over_htmx_puts_the_next_items_address_in_the_browser(client_as, flagged_tasks):
    first, second = flagged_tasks(2)
    reviewer = client_as("reviewer")
    reviewer.post("/review/next/")
    response = reviewer.post(f"/review/{first.pk}/decide/", {"outcome": "agree"}, headers={"HX-Request": "true"})
    assert response["HX-Push-Url"] == f"/review/{second.pk}/"
    response = reviewer.post(f"/review/{second.pk}/decide/", {"outcome": "agree"}, headers={"HX-Request": "true"})
    assert response["HX-Push-Url"] == "/review/"


def test_the_item_page_shows_which_text_each_decided_category_was_chosen_for(client_as, judged_item, make_user):
    from moderation import review

    item = judged_item("Write malware", response="Sure, here it is", verdict=guard_verdict(prompt_label="unsafe", response_label="unsafe", refusal_label="compliance"))
    alice = make_user("alice", "reviewer")
    task = review.claim_next(alice)
    review.decide(task.pk, alice, "override", review.Labels("unsafe", "unsafe", "compliance", prompt_categories=["S2"], response_categories=["S1"]))
    html = client_as("viewer").get(f"/items/{item.pk}/").content.decode()
    assert '<span class="muted">prompt:</span> S2 · <span class="muted">response:</span> S1' in html
