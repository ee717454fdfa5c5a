"""The review keyboard in a real browser: focus after a submit, and which text a category key changes."""

from __future__ import annotations

import re

import pytest

from moderation.models import Decision, ReviewTask
from tests.moderation.conftest import guard_verdict

pytestmark = pytest.mark.browser


@pytest.fixture
def answered_item(judged_item):
    """An item with a response; the guard found the prompt unsafe (S2) and the response a safe refusal."""

    def make(prompt: str = "How do I pick a lock?"):
        verdict = guard_verdict(prompt_label="unsafe", categories=("S2",), response_label="safe", refusal_label="refusal")
        return judged_item(prompt, verdict, response="I can't help with that.")

    return make


def claim_with_j(page) -> None:
    from playwright.sync_api import expect

    page.goto("/review/")
    page.keyboard.press("j")
    expect(page.locator("#decision-form")).to_be_visible()


def test_after_ctrl_enter_from_the_note_the_focus_returns_to_the_page_so_shortcuts_work(signed_in_page, flagged_tasks):
    from playwright.sync_api import expect

    first, second = flagged_tasks(2)
    page = signed_in_page("reviewer")
    page.goto("/review/")
    panel = page.locator("#review-panel")
    page.keyboard.press("j")
    expect(panel).to_have_attribute("data-task-id", str(first.pk))
    expect(panel).to_be_focused()  # the swap has settled: the shortcuts are wired to the new item
    page.keyboard.press("n")
    expect(page.locator("#note")).to_be_focused()
    page.keyboard.type("checked the context")
    page.keyboard.press("Control+Enter")  # submit from inside the note

    expect(panel).to_have_attribute("data-task-id", str(second.pk))
    expect(panel).to_be_focused()  # set when the swap settles, a moment after the new item shows
    expect(page.locator("#note")).to_have_value("")
    page.keyboard.press("u")  # a shortcut again, not a letter in the note: releases the item
    expect(panel).to_contain_text("1 item waiting")

    assert Decision.objects.get(task=first).note == "checked the context"
    assert ReviewTask.objects.get(pk=second.pk).state == ReviewTask.State.OPEN


def test_the_categories_start_on_the_text_the_guard_found_unsafe(signed_in_page, answered_item):
    from playwright.sync_api import expect

    answered_item()
    page = signed_in_page("reviewer")
    claim_with_j(page)
    expect(page.locator("#prompt-labels")).to_have_class(re.compile(r"\bactive-field\b"))
    expect(page.locator("#response-labels")).not_to_have_class(re.compile(r"\bactive-field\b"))
    expect(page.locator("#category-target")).to_have_text("prompt")


def test_prompt_toggle_then_a_category_key_changes_only_the_prompt_and_says_so(signed_in_page, answered_item):
    from playwright.sync_api import expect

    item = answered_item()
    page = signed_in_page("reviewer")
    claim_with_j(page)
    status = page.locator("#review-status")

    page.keyboard.press("p")  # the prompt is safe: S2 goes, visibly
    expect(page.locator("input[name=prompt_label][value=safe]")).to_be_checked()
    expect(status).to_contain_text("categories S2 cleared")
    expect(page.locator("label.category-choice.removed")).to_contain_text("S2")
    expect(page.locator("#prompt-labels .was")).to_have_text("changed, guard said unsafe")

    page.keyboard.press("1")  # S1 for the outlined text: the prompt, and only the prompt
    expect(page.locator("input[name=prompt_label][value=unsafe]")).to_be_checked()
    expect(page.locator("input[name=response_label][value=safe]")).to_be_checked()
    expect(status).to_contain_text("prompt → unsafe")
    expect(page.locator("label.category-choice.added")).to_contain_text("S1")
    page.keyboard.press("o")

    expect(page.locator("#review-panel")).to_contain_text("The queue is empty")
    decision = Decision.objects.get(item=item)
    assert (decision.prompt_label, decision.response_label, decision.categories) == ("unsafe", "safe", ["S1"])


def test_switching_the_text_makes_a_category_key_mark_the_response_visibly(signed_in_page, answered_item):
    from playwright.sync_api import expect

    item = answered_item()
    page = signed_in_page("reviewer")
    claim_with_j(page)

    page.keyboard.press("t")
    expect(page.locator("#category-target")).to_have_text("response")
    expect(page.locator("#response-labels")).to_have_class(re.compile(r"\bactive-field\b"))
    page.keyboard.press("1")
    expect(page.locator("input[name=response_label][value=unsafe]")).to_be_checked()
    expect(page.locator("#response-labels")).to_have_class(re.compile(r"\bactive-field\b.*\bchanged\b"))
    expect(page.locator("#response-labels .was")).to_have_text("changed, guard said safe")
    expect(page.locator("#review-status")).to_contain_text("response → unsafe")
    expect(page.locator("#prompt-labels")).not_to_have_class(re.compile(r"\bchanged\b"))
    page.keyboard.press("o")

    expect(page.locator("#review-panel")).to_contain_text("The queue is empty")
    decision = Decision.objects.get(item=item)
    assert (decision.prompt_label, decision.response_label, decision.categories) == ("unsafe", "unsafe", ["S1", "S2"])
