"""A policy's review budget, set on its "Review budget" page: validated, audited, and shown with what it gives."""

from __future__ import annotations

import pytest

from moderation.models import AuditLog
from policies.models import Policy


@pytest.fixture
def policy(make_policy) -> Policy:
    return make_policy("acme", publish=True)


def test_an_editor_sets_a_budget_in_items_a_day_and_it_is_audited(client_as, policy):
    response = client_as("policy_editor").post("/policies/acme/review-budget/", {"review_budget": "per_day", "review_items_per_day": "40"})
    assert response.status_code == 302 and response["Location"] == "/policies/acme/review-budget/"
    policy.refresh_from_db()
    assert (policy.review_budget, policy.review_items_per_day, policy.review_budget_text) == ("per_day", 40, "40 items a day")
    entry = AuditLog.objects.get(action="policy.settings", object_id=str(policy.pk))
    assert entry.before["review_budget"] == "fixed" and entry.after == {"review_budget": "per_day", "review_items_per_day": 40, "review_traffic_percent": None}


def test_a_share_of_traffic_replaces_an_items_a_day_budget(client_as, policy):
    client = client_as("policy_editor")
    client.post("/policies/acme/review-budget/", {"review_budget": "per_day", "review_items_per_day": "40"})
    client.post("/policies/acme/review-budget/", {"review_budget": "share", "review_traffic_percent": "2.5", "review_items_per_day": "40"})
    policy.refresh_from_db()
    assert (policy.review_budget, policy.review_items_per_day, policy.review_traffic_percent) == ("share", None, 2.5)
    assert "2.5% of traffic" in client.get("/policies/acme/").content.decode()


@pytest.mark.parametrize("data, message", [
    ({"review_budget": "per_day"}, "needs the number of items the team reviews a day"),
    ({"review_budget": "per_day", "review_items_per_day": "lots"}, "Items a day must be a whole number"),
    ({"review_budget": "per_day", "review_items_per_day": "0"}, "greater than or equal to 1"),
    ({"review_budget": "share"}, "needs the percent of items to review"),
    ({"review_budget": "share", "review_traffic_percent": "150"}, "less than or equal to 100"),
    ({"review_budget": "share", "review_traffic_percent": "a bit"}, "must be a number of percent"),
    ({"review_budget": "everything"}, "Select a valid choice"),
])
def test_a_budget_that_cannot_apply_is_refused_with_the_reason_by_its_field(client_as, policy, data, message):
    response = client_as("policy_editor").post("/policies/acme/review-budget/", data)
    assert response.status_code == 400
    assert message in response.content.decode()
    policy.refresh_from_db()
    assert policy.review_budget == "fixed"


def test_reviewers_cannot_change_the_budget(client_as, policy):
    assert client_as("reviewer").post("/policies/acme/review-budget/", {"review_budget": "per_day", "review_items_per_day": "5"}).status_code == 403


def test_the_budget_page_shows_the_band_it_starts_with_before_any_traffic(client_as, policy):
    client = client_as("policy_editor")
    client.post("/policies/acme/review-budget/", {"review_budget": "per_day", "review_items_per_day": "40"})
    html = client.get("/policies/acme/review-budget/").content.decode()
    assert "threshold ± 0.050" in html and "sized as traffic comes in" in html
