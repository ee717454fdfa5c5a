"""The layout in real headless Chromium: every main page fits a 375 px phone, the top bar
folds behind a menu button there and marks the current page, nothing asks for a missing
favicon, and the items table stays inside its card with a long prompt at 1280 px."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from moderation.models import Item, ReviewTask, Verdict
from policies import presets
from policies.models import Policy

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PHONE = {"width": 375, "height": 800}
LONG_WORD = "supercalifragilisticexpialidocious" * 8
LONG_PROMPT = f"Tell me about {LONG_WORD} and " + "a very long story about many things " * 40
MAIN_PAGES = {
    "overview": "/",
    "policies": "/policies/",
    "policy": "/policies/house/",
    "policy-editor": "/policies/house/draft/",
    "items": "/items/",
    "review": "/review/",
    "review-queue": "/review/queue/",
    "training": "/training/",
    "training-new": "/training/new",
    "evaluations": "/evaluations/",
    "models": "/models/",
    "api-keys": "/api-keys/",
    "audit": "/audit/",
}
# GUARDSITE_DOCS_SCREENSHOTS=1: the phone screenshots of these pages are copied to docs/.
DOCS = Path(__file__).resolve().parents[2] / "docs"
DOCS_SHOTS = {"overview": "mobile-overview.png", "items": "mobile-items.png"}


@pytest.fixture
def site(db) -> Item:
    """A published policy from the general preset, and a flagged item with a long prompt waiting for review."""
    policy = Policy.create_from_spec(presets.preset_spec("general"), slug="house", name="House rules", preset="general")
    version = policy.publish(change_note="first")
    item = Item.objects.create(
        policy_version=version, prompt=LONG_PROMPT, response="Sure: " + LONG_WORD, external_id=("chat-" + LONG_WORD)[:190],
        status=Item.Status.DONE, attempts=1,
    )
    Verdict.objects.create(
        item=item, prompt_label="unsafe", response_label="unsafe", categories=[f"S{i}" for i in range(1, 9)],
        explanation="Asks for " + LONG_WORD, confidence=0.9, model_label="embedded", action="flag",
    )
    ReviewTask.objects.create(item=item, reason="flag")
    return item


def page_width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


WIDEST = """() => [...document.querySelectorAll('body *')]
  .filter(el => el.getBoundingClientRect().right > document.documentElement.clientWidth + 1 || el.scrollWidth > document.documentElement.clientWidth + 1)
  .map(el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + '.' + [...el.classList].join('.') + ' ' + Math.round(el.getBoundingClientRect().right))
  .slice(0, 12)"""


def settle(page, path: str) -> None:
    """Open ``path`` and let the htmx requests the page makes on load finish."""
    page.goto(path)
    page.wait_for_load_state("load")
    page.wait_for_timeout(600)


@pytest.mark.browser
def test_every_main_page_fits_a_375_px_phone(signed_in_page, site):
    page = signed_in_page("admin")
    page.set_viewport_size(PHONE)
    ARTIFACTS.mkdir(exist_ok=True)
    widths = {}
    for name, path in MAIN_PAGES.items():
        settle(page, path)
        widths[name] = page_width(page)
        if widths[name] > PHONE["width"]:
            print(name, page.evaluate(WIDEST))
        page.screenshot(path=str(ARTIFACTS / f"mobile-{name}.png"), full_page=True)
    assert {name: width for name, width in widths.items() if width > PHONE["width"]} == {}
    if os.environ.get("GUARDSITE_DOCS_SCREENSHOTS"):
        for name, filename in DOCS_SHOTS.items():
            shutil.copyfile(ARTIFACTS / f"mobile-{name}.png", DOCS / filename)
        settle(page, "/")
        page.click(".topnav .nav-toggle")
        page.screenshot(path=str(DOCS / "mobile-menu.png"))


@pytest.mark.browser
def test_the_item_page_and_a_claimed_review_fit_a_375_px_phone(signed_in_page, site):
    from django.contrib.auth.models import User

    from moderation import review

    page = signed_in_page("reviewer", username="rita")
    page.set_viewport_size(PHONE)
    settle(page, f"/items/{site.pk}/")
    assert page_width(page) <= PHONE["width"], page.evaluate(WIDEST)
    task = review.claim_next(User.objects.get(username="rita"))
    settle(page, f"/review/{task.pk}/")
    assert page.locator("textarea, input[name=category_codes]").count() > 0, "not the review form"
    assert page_width(page) <= PHONE["width"], page.evaluate(WIDEST)
    page.screenshot(path=str(ARTIFACTS / "mobile-review-task.png"), full_page=True)


@pytest.mark.browser
def test_detail_pages_fit_a_375_px_phone(signed_in_page, site):
    from evaluation.models import EvaluationRun
    from guard.models import ModelVersion

    ModelVersion.objects.create(name="house-guard-" + "v" * 60, status="candidate", adapter_path="/srv/models/" + LONG_WORD)
    run = EvaluationRun.objects.create(model="embedded", mode="fast", policy="jbb_category", data=["shipped.jsonl"])
    page = signed_in_page("admin")
    page.set_viewport_size(PHONE)
    wide = {}
    for path in ("/policies/house/versions/1/", "/policies/house/diff/", "/policies/import/", f"/models/house-guard-{'v' * 60}/",
                 f"/evaluations/{run.pk}/", "/review/agreement/"):
        settle(page, path)
        if page_width(page) > PHONE["width"]:
            wide[path] = page.evaluate(WIDEST)
    assert wide == {}


@pytest.mark.browser
def test_on_a_phone_the_navigation_folds_behind_a_menu_button_that_opens_it(signed_in_page, site):
    page = signed_in_page("viewer")
    page.set_viewport_size(PHONE)
    settle(page, "/")
    toggle = page.locator(".topnav .nav-toggle")
    items_link = page.locator(".topnav a[data-nav='items']")
    assert toggle.is_visible() and toggle.get_attribute("aria-expanded") == "false"
    assert not items_link.is_visible()
    toggle.click()
    assert items_link.is_visible() and toggle.get_attribute("aria-expanded") == "true"
    assert page_width(page) <= PHONE["width"]
    items_link.click()
    page.wait_for_url("**/items/")
    toggle.click()
    assert page.locator(".topnav a[aria-current='page']").inner_text() == "Items"
    toggle.click()
    assert not items_link.is_visible()


@pytest.mark.browser
def test_on_a_wide_screen_the_links_show_without_a_menu_button(signed_in_page, site):
    page = signed_in_page("viewer")
    settle(page, "/")
    assert not page.locator(".topnav .nav-toggle").is_visible()
    assert page.locator(".topnav a[data-nav='evaluations']").is_visible()


@pytest.mark.browser
def test_the_top_bar_marks_the_current_page_visibly(signed_in_page, site):
    page = signed_in_page("viewer")
    settle(page, f"/items/{site.pk}/")
    current = page.locator(".topnav a[aria-current='page']")
    assert current.count() == 1 and current.get_attribute("data-nav") == "items"
    style = "el => [getComputedStyle(el).fontWeight, getComputedStyle(el).boxShadow, getComputedStyle(el).color]"
    other = page.locator(".topnav a[data-nav='policies']")
    assert current.evaluate(style) != other.evaluate(style)
    settle(page, "/policies/house/draft/")
    assert page.locator(".topnav a[aria-current='page']").get_attribute("data-nav") == "policies"
    settle(page, "/")
    assert page.locator(".topnav a[aria-current='page']").get_attribute("data-nav") == "overview"


@pytest.mark.browser
def test_no_page_asks_for_a_missing_favicon_or_any_missing_file(signed_in_page, site):
    page = signed_in_page("admin")
    missing: list[str] = []
    page.on("response", lambda response: missing.append(f"{response.status} {response.url}") if response.status >= 400 else None)
    for path in MAIN_PAGES.values():
        settle(page, path)
    icon = page.evaluate("document.querySelector('link[rel=icon]').href")
    assert page.request.get(icon).status == 200
    assert page.request.get("/favicon.ico").status == 200
    assert missing == []


@pytest.mark.browser
def test_the_items_table_stays_inside_its_card_at_1280_px_with_a_long_prompt(signed_in_page, site):
    page = signed_in_page("viewer")
    settle(page, "/items/")
    assert page_width(page) <= 1280
    card = page.locator("#item-results").bounding_box()
    for column in ("td.prompt", "td.categories", "td.action"):
        box = page.locator(f"table.items tr[data-item-id='{site.pk}'] {column}").bounding_box()
        assert box["x"] + box["width"] <= card["x"] + card["width"] + 0.5, f"{column} spills out of the card"
    prompt = page.locator(f"table.items tr[data-item-id='{site.pk}'] td.prompt")
    assert prompt.get_attribute("title").startswith("Tell me about")
    assert prompt.evaluate("el => getComputedStyle(el).textOverflow") == "ellipsis"
