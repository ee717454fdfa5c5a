"""The review queue in a real browser, driven by the keyboard alone."""

from __future__ import annotations

import pytest

from moderation.models import AuditLog, Decision


@pytest.mark.browser
def test_a_reviewer_reviews_three_items_with_the_keyboard_only(signed_in_page, flagged_tasks):
    from playwright.sync_api import expect

    first, second, third = flagged_tasks(3)
    page = signed_in_page("reviewer")
    page.goto("/review/")
    panel = page.locator("#review-panel")

    page.keyboard.press("j")  # claim the next item
    expect(panel).to_have_attribute("data-task-id", str(first.pk))
    expect(panel.locator("mark.highlight").first).to_have_text("S2")
    page.keyboard.press("a")  # agree, submit and next

    expect(panel).to_have_attribute("data-task-id", str(second.pk))
    expect(panel).to_be_focused()  # the swap has settled: the shortcuts are wired to the new item
    page.keyboard.press("1")  # add category S1: an override
    expect(page.locator("#outcome-label")).to_have_text("override")
    page.keyboard.press("n")  # write a note
    expect(page.locator("#note")).to_be_focused()
    page.keyboard.type("also violent")
    page.keyboard.press("Escape")
    page.keyboard.press("Enter")  # submit and next

    expect(panel).to_have_attribute("data-task-id", str(third.pk))
    expect(panel).to_be_focused()
    page.keyboard.press("p")  # the prompt is safe after all (clears the categories)
    page.keyboard.press("o")  # override, submit and next

    expect(panel).to_contain_text("The queue is empty")
    decisions = {d.task_id: d for d in Decision.objects.all()}
    assert decisions[first.pk].outcome == "agree" and decisions[first.pk].categories == ["S2"]
    assert (decisions[second.pk].outcome, decisions[second.pk].categories, decisions[second.pk].note) == ("override", ["S1", "S2"], "also violent")
    assert (decisions[third.pk].outcome, decisions[third.pk].prompt_label, decisions[third.pk].categories) == ("override", "safe", [])
    assert AuditLog.objects.filter(action__startswith="review.").count() == 3


@pytest.mark.browser
def test_a_key_pressed_while_the_next_item_loads_acts_on_that_item_without_reloading_the_page(signed_in_page, flagged_tasks):
    from playwright.sync_api import expect

    first, second = flagged_tasks(2)
    page = signed_in_page("reviewer")
    page.goto("/review/")
    page.evaluate("window.sameDocument = true")
    panel = page.locator("#review-panel")

    page.keyboard.press("j")  # claim the next item...
    page.keyboard.press("a")  # ...and agree at once, before it has arrived

    expect(panel).to_have_attribute("data-task-id", str(second.pk))
    expect(panel).to_be_focused()
    assert page.evaluate("window.sameDocument === true")  # no plain form post reloaded the page
    assert [(d.task_id, d.outcome) for d in Decision.objects.all()] == [(first.pk, "agree")]
