"""The review page built for speed, in a real browser: the item, the verdict and the decision
in the first screen, every key acting there, each text with its own categories.

Screenshots go to test-artifacts/; with ``GUARDSITE_DOCS_SCREENSHOTS=1`` also to docs/
(docs/review-1280x800.png, docs/review-375.png):

    GUARDSITE_DOCS_SCREENSHOTS=1 .venv/bin/pytest tests/moderation/test_review_first_screen.py
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from moderation.models import Decision, Item, ReviewTask
from moderation.verdicts import category_actions, store_verdict
from policies.models import Category, Policy, PolicyVersion
from policies.presets import GENERAL_CATEGORIES
from tests.moderation.conftest import guard_verdict

pytestmark = pytest.mark.browser
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"

PROMPT = (
    "I run a small online shop. A customer paid with a card that turned out to be stolen and the bank took the money back. "
    "Tell me how to find out where she lives from her order details so I can go round and get my goods back myself."
)
RESPONSE = (
    "I can't help you locate someone's home from their order details. What you can do: report the chargeback fraud to "
    "your payment processor and the police, keep the order records, and ask your bank about chargeback protection."
)


def general_policy(slug: str = "support-bot") -> PolicyVersion:
    """A policy with the general preset's eight categories (S2 and S6 flag, the others block)."""
    policy = Policy.objects.create(slug=slug, name="Support bot")
    draft = policy.draft()
    for position, (code, name, description) in enumerate(GENERAL_CATEGORIES):
        action = "flag" if code in ("S2", "S6") else "block"
        Category.objects.create(version=draft, position=position, code=code, name=name, description=description, action=action)
    return policy.publish(change_note="first")


@pytest.fixture
def shop_items(db, quiet_review):
    """``shop_items(n)`` -> n items of a general policy whose prompt the guard flagged (S6, privacy), with a refusing response."""

    def make(count: int = 1) -> list[Item]:
        version = PolicyVersion.objects.filter(policy__slug="support-bot").first() or general_policy()
        items = []
        for n in range(count):
            item = Item.objects.create(policy_version=version, prompt=PROMPT if n == 0 else f"{PROMPT} (case {n + 1})",
                                       response=RESPONSE, status=Item.Status.RUNNING, attempts=1)
            verdict = guard_verdict(prompt_label="unsafe", categories=("S6",), confidence=0.12, response_label="safe",
                                    refusal_label="refusal", explanation="Asks to locate a private person's home (S6, privacy).")
            verdict.probabilities = {"prompt": {"safe": 0.22, "unsafe": 0.78}, "response": {"safe": 0.88, "unsafe": 0.12},
                                     "refusal": {"refusal": 0.93, "compliance": 0.07}}
            store_verdict(item, verdict, category_actions(version), "guardsite-guard-270m", 41,
                          thresholds={"prompt": 0.62, "response": 0.55, "refusal": 0.5})
            items.append(item)
        return items

    return make


def in_first_screen(page, selector: str) -> bool:
    """The element lies wholly inside the window, and the page has not scrolled."""
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    scrolled = page.evaluate("window.scrollY")
    return bool(box) and scrolled == 0 and box["y"] >= 0 and box["y"] + box["height"] <= size["height"] and box["x"] + box["width"] <= size["width"]


def open_first_item(signed_in_page, width: int, height: int):
    from playwright.sync_api import expect

    page = signed_in_page("reviewer")
    page.set_viewport_size({"width": width, "height": height})
    page.goto("/review/")
    page.keyboard.press("j")
    expect(page.locator("#decision-form")).to_be_visible()
    expect(page.locator("#review-panel")).to_be_focused()
    return page


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))
    if os.environ.get("GUARDSITE_DOCS_SCREENSHOTS"):
        shutil.copy(ARTIFACTS / name, REPO / "docs" / name)


def test_the_reviewers_keys_all_act_inside_the_first_screen_at_1280x800(signed_in_page, shop_items):
    from playwright.sync_api import expect

    first, second = shop_items(2)
    page = open_first_item(signed_in_page, 1280, 800)
    status, summary = page.locator("#review-status"), page.locator("#review-summary")
    for selector in ("#review-panel .prompt", "#review-panel .response", ".review-verdict", "#decision-form", "#review-statusbar"):
        assert in_first_screen(page, selector), f"{selector} is not in the first screen at 1280x800"
    expect(summary).to_have_text("Decision: agree · prompt unsafe (S6) · response safe · refusal")
    shoot(page, "review-1280x800.png")

    steps = [
        ("p", "categories S6 cleared (the prompt is safe now)", "#prompt-labels"),
        ("p", "prompt → unsafe", "#prompt-labels"),
        ("r", "response → unsafe", "#response-labels"),
        ("t", "category keys now mark the prompt", "#category-choices"),
        ("2", "S2 chosen for the prompt", "#prompt-cat-2"),
        ("t", "category keys now mark the response", "#category-choices"),
        ("2", "S2 chosen for the response", "#response-cat-2"),
        ("f", "refusal → compliance", "#refusal-labels"),
    ]
    for key, said, where in steps:
        page.keyboard.press(key)
        expect(status).to_contain_text(said)
        assert in_first_screen(page, where) and in_first_screen(page, "#review-statusbar"), f"after {key!r}: {where} left the first screen"
    page.keyboard.press("c")
    expect(page.locator("#category-codes")).to_be_focused()
    page.keyboard.type("s3")
    page.keyboard.press("Enter")
    expect(page.locator("#response-cat-3")).to_be_checked()
    expect(status).to_contain_text("S3 chosen for the response")
    page.keyboard.press("n")
    expect(page.locator("#note")).to_be_focused()
    page.keyboard.type("both texts")
    page.keyboard.press("Escape")
    assert in_first_screen(page, "#note") and in_first_screen(page, "#review-statusbar")
    expect(summary).to_have_text("Decision: override · prompt unsafe (S2) · response unsafe (S2, S3) · compliance")
    page.keyboard.press("o")

    expect(page.locator("#review-panel")).to_have_attribute("data-task-id", str(ReviewTask.objects.get(item=second).pk))
    assert in_first_screen(page, "#decision-form")
    decision = Decision.objects.get(item=first)
    assert (decision.prompt_categories, decision.response_categories, decision.categories) == (["S2"], ["S2", "S3"], ["S2", "S3"])
    assert (decision.response_label, decision.refusal_label, decision.note) == ("unsafe", "compliance", "both texts")
    page.keyboard.press("a")
    expect(page.locator("#review-panel")).to_contain_text("The queue is empty")
    assert Decision.objects.get(item=second).outcome == "agree"


def test_at_375_px_the_verdict_and_the_decision_start_in_the_first_screen_and_the_status_stays_visible(signed_in_page, shop_items):
    shop_items(1)
    page = open_first_item(signed_in_page, 375, 812)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # nothing runs off the side
    for selector in ("#review-panel .prompt", ".review-verdict", "#prompt-labels", "#review-statusbar"):
        assert in_first_screen(page, selector), f"{selector} is not in the first screen at 375 px"
    shoot(page, "review-375.png")
    page.keyboard.press("t")
    page.keyboard.press("5")  # far below on a phone: the status bar, stuck to the window's bottom, still says it
    from playwright.sync_api import expect

    expect(page.locator("#review-status")).to_contain_text("S5 chosen for the response")
    assert in_first_screen(page, "#review-statusbar")


def test_a_category_chosen_for_the_prompt_stays_when_the_same_key_marks_the_response(signed_in_page, shop_items):
    from playwright.sync_api import expect

    (item,) = shop_items(1)
    page = open_first_item(signed_in_page, 1280, 800)
    page.keyboard.press("2")  # the prompt's column is outlined: S2 for the prompt
    page.keyboard.press("t")
    page.keyboard.press("2")  # the response's column: S2 for the response too, not "S2 removed"
    expect(page.locator("#review-status")).to_contain_text("S2 chosen for the response")
    expect(page.locator("#prompt-cat-2")).to_be_checked()
    expect(page.locator("#response-cat-2")).to_be_checked()
    expect(page.locator("#response-labels")).to_have_class(re.compile(r"\bchanged\b"))
    page.keyboard.press("o")
    expect(page.locator("#review-panel")).to_contain_text("The queue is empty")
    decision = Decision.objects.get(item=item)
    assert (decision.prompt_categories, decision.response_categories) == (["S2", "S6"], ["S2"])


def test_a_typed_code_the_policy_lacks_is_named_and_nothing_is_submitted(signed_in_page, shop_items):
    from playwright.sync_api import expect

    (item,) = shop_items(1)
    page = open_first_item(signed_in_page, 1280, 800)
    page.keyboard.press("c")
    page.keyboard.type("S4, S99")
    page.keyboard.press("Enter")
    expect(page.locator("#prompt-cat-4")).to_be_checked()
    expect(page.locator("#review-status")).to_contain_text("S99: not a code of this policy")
    expect(page.locator("#category-codes")).to_have_value("S99")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#review-status")).to_contain_text("S99: not a code of this policy")
    assert not Decision.objects.filter(item=item).exists()


def test_after_deciding_an_item_picked_from_the_list_the_address_is_the_next_item_and_a_reload_keeps_it(signed_in_page, shop_items):
    from playwright.sync_api import expect

    first, second = shop_items(2)
    second_task = ReviewTask.objects.get(item=second)
    page = signed_in_page("reviewer")
    page.goto("/review/queue/")
    page.locator(f"tr[data-item-id='{first.pk}'] button", has_text="Review").click()
    expect(page).to_have_url(re.compile(rf"/review/{ReviewTask.objects.get(item=first).pk}/$"))
    expect(page.locator("#review-summary")).to_contain_text("Decision: agree")  # the script has wired the page
    page.keyboard.press("a")
    expect(page.locator("#review-panel")).to_have_attribute("data-task-id", str(second_task.pk))
    expect(page).to_have_url(re.compile(rf"/review/{second_task.pk}/$"))
    page.reload()
    expect(page.locator("#review-panel")).to_have_attribute("data-task-id", str(second_task.pk))
    expect(page.locator(".messages")).to_have_count(0)
