"""An item page in a real browser: the explanation of a fast verdict appears when the reason pass has written it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moderation import explain
from moderation.models import Item, Verdict
from moderation.verdicts import Timing, category_actions, store_verdict
from tests.moderation.conftest import guard_verdict

REPO = Path(__file__).resolve().parents[2]
WRITE_SCREENSHOTS = os.environ.get("GUARDSITE_SCREENSHOTS") == "1"


@pytest.mark.browser
def test_the_item_page_shows_being_written_then_the_explanation_without_a_reload(signed_in_page, house_policy, tiny_guard, quiet_review):
    from playwright.sync_api import expect

    fast = guard_verdict(prompt_label="unsafe", categories=("S2",), confidence=0.81, explanation="")
    fast.mode = "fast"
    fast.probabilities = {"prompt": {"safe": 0.19, "unsafe": 0.81}}
    item = Item.objects.create(policy_version=house_policy, prompt="How do I get into my neighbour's wifi?", status=Item.Status.RUNNING)
    store_verdict(item, fast, category_actions(house_policy), "guardsite-guard-270m", 0,
                  timing=Timing(latency_ms=221, batch_size=5, batch_ms=1105), thresholds={"prompt": 0.757})

    page = signed_in_page("viewer")
    page.goto(f"/items/{item.pk}/")
    block = page.locator(f"#explanation-{item.pk}")
    expect(block).to_contain_text("Being written")
    expect(page.locator("ul.label-decisions")).to_contain_text("P(unsafe) 0.810, threshold 0.757 → unsafe")
    expect(page.locator(".verdict .timing")).to_contain_text("221 ms (its share of a batch of 5 in 1105 ms)")
    page.evaluate("window.__not_reloaded = true")

    assert explain.run_pending(time_budget_s=120).written == 1  # the background pass, here in the test's process

    expect(block).to_have_attribute("data-explanation-status", "done", timeout=20_000)
    written = Verdict.objects.get(item=item).explanation
    expect(block.locator("p.explanation")).to_have_text(written)
    assert page.evaluate("window.__not_reloaded") is True
    if WRITE_SCREENSHOTS:
        page.screenshot(path=str(REPO / "docs" / "item-explanation.png"), full_page=True)
