"""In real headless Chromium at 1280 px: codes never break inside ("S14", not "S1/4"), the job's data mix
shows its total column, and the test console's model select shows its whole label."""

from __future__ import annotations

import pytest

from guard.models import ModelVersion
from moderation.models import Item, Verdict
from policies import presets
from policies.models import Policy
from trainer.models import TrainingJob

MIX = {
    "prompt": {"safe": {"reviewed:default": 120, "shared:aegis": 800, "shared:beavertails": 700},
               "unsafe": {"reviewed:default": 30, "shared:aegis": 400, "shared:beavertails": 500}},
    "response": {"safe": {"shared:beavertails": 300}, "unsafe": {"shared:beavertails": 200}},
    "refusal": {"refusal": {"shared:xstest": 100}, "compliance": {"shared:xstest": 120}},
}
# Elements whose text is a code: each must lie on one line.
ONE_LINE = """sel => [...document.querySelectorAll(sel)]
  .filter(el => el.getClientRects().length > 1 || el.getBoundingClientRect().height > 1.6 * parseFloat(getComputedStyle(el).lineHeight || 20))
  .map(el => el.textContent.trim())"""
# Words of a plain-text cell that the browser broke across lines.
SPLIT_WORDS = """el => {
  const text = el.firstChild; const broken = []; let at = 0;
  for (const word of text.textContent.split(/(, )/)) {
    if (word !== ', ') { const r = document.createRange(); r.setStart(text, at); r.setEnd(text, at + word.length);
      if (r.getClientRects().length > 1) broken.push(word); }
    at += word.length;
  }
  return broken;
}"""
# The width the select's current label needs against the room it has (padding and the arrow).
SELECT_FIT = """el => {
  const style = getComputedStyle(el);
  const ctx = document.createElement('canvas').getContext('2d');
  ctx.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
  const need = ctx.measureText(el.selectedOptions[0].text).width + parseFloat(style.paddingLeft) + 24;
  return {need: Math.ceil(need), room: el.clientWidth, text: el.selectedOptions[0].text};
}"""


@pytest.fixture
def demo(db, settings) -> dict:
    """As ``make demo`` leaves it: the shipped guard registered as production, the MLCommons policy
    published as "default", a flagged item in S14 and a trained job with its data mix."""
    ModelVersion.objects.create(name="guardsite-guard-270m", status="production", adapter_path=str(settings.SHIPPED_GUARD_DIR))
    ModelVersion.objects.create(name="sft-job12", status="candidate", adapter_path="/tmp/a")
    policy = Policy.create_from_spec(presets.preset_spec("mlcommons_hazards"), slug="default", name="Default", preset="mlcommons_hazards")
    version = policy.publish(change_note="first")
    item = Item.objects.create(policy_version=version, prompt="Run this shell loop forever", status=Item.Status.DONE, attempts=1)
    Verdict.objects.create(item=item, prompt_label="unsafe", categories=["S14", "S1", "S10", "S11", "S12"], confidence=0.9,
                           model_label="guardsite-guard-270m", action="flag")
    job = TrainingJob.objects.create(recipe="sft", data_sources=["reviewed:default"], status="succeeded",
                                     summary={"data_mix": {"table": MIX, "summary": {"tasks": {}}}})
    return {"policy": policy, "item": item, "job": job}


@pytest.mark.browser
def test_category_codes_and_policy_labels_never_break_inside(signed_in_page, demo):
    page = signed_in_page("admin")
    page.goto("/policies/default/draft/")
    assert page.evaluate(ONE_LINE, "code.code") == []
    page.goto("/items/")
    assert page.evaluate(ONE_LINE, "table.items td code") == []
    categories = page.locator(f"table.items tr[data-item-id='{demo['item'].pk}'] td.categories")
    broken = categories.evaluate(SPLIT_WORDS)
    assert broken == []


@pytest.mark.browser
def test_the_jobs_data_mix_shows_its_total_column_at_1280(signed_in_page, demo):
    page = signed_in_page("admin")
    page.goto(f"/training/{demo['job'].pk}/")
    card = page.locator("#job-data-mix")
    assert card.evaluate("el => el.scrollWidth <= el.clientWidth"), "the data mix scrolls inside its card"
    total = page.locator("#job-data-mix table.train-mix thead th").last
    assert total.inner_text() == "total"
    box, card_box = total.bounding_box(), card.bounding_box()
    assert box["x"] + box["width"] <= card_box["x"] + card_box["width"]


@pytest.mark.browser
def test_the_consoles_model_select_shows_its_whole_label_at_1280(signed_in_page, demo):
    page = signed_in_page("policy_editor")
    page.goto("/policies/default/draft/")
    select = page.locator("#console-form select[name=model]")
    for value in ("embedded", "sft-job12"):
        select.select_option(value)
        fit = select.evaluate(SELECT_FIT)
        assert fit["need"] <= fit["room"], fit
