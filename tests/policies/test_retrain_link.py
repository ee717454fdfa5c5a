"""The loop policy -> retrain starts from the policy page."""

from __future__ import annotations

from policies.models import Policy


def test_policy_editors_see_a_retrain_link_on_the_policy_page(client_as):
    Policy.objects.create(slug="house", name="House rules")
    page = client_as("policy_editor").get("/policies/house/")
    assert b'href="/training/new?policy=house"' in page.content


def test_viewers_do_not_see_the_retrain_link(client_as):
    Policy.objects.create(slug="house", name="House rules")
    page = client_as("viewer").get("/policies/house/")
    assert b"/training/new?policy=house" not in page.content
