"""The models page in a browser: roll back to the demo's first production model through the confirmation,
with a reason, and the page after it (docs/models-after-rollback.png).

Screenshots go to test-artifacts/; with ``GUARDSITE_DOCS_SCREENSHOTS=1`` also to docs/:

    GUARDSITE_DOCS_SCREENSHOTS=1 .venv/bin/pytest tests/trainer/test_registry_browser.py
"""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from guard.models import ModelVersion
from policies.models import Policy
from tests.trainer.test_registry_gate import finished_run, outcome_report, trained
from trainer import registry
from trainer.models import RegistryEvent

pytestmark = pytest.mark.browser
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
WIDTH = 1280
SHIPPED = "guardsite-guard-270m"


def seed() -> None:
    """The demo after a promotion: the shipped guard (registered as production, never promoted), one promoted
    candidate and one that drops F1 within the uncertainty, each evaluated with the shipped guard on 57 records."""
    shipped = ModelVersion.objects.create(name=SHIPPED, adapter_path="/srv/guardsite/models/guardsite-guard-270m",
                                          status=ModelVersion.Status.PRODUCTION,
                                          metrics={"report": outcome_report(SHIPPED, "P" * 28 + "N" * 3 + "T" * 24 + "F" * 2)},
                                          provenance={"recipe": "sft"})
    ModelVersion.objects.filter(pk=shipped.pk).update(created_at=timezone.now() - timedelta(days=3))
    Policy.objects.create(slug="support-bot", name="Support bot", production_model=shipped)
    better = trained("sft-job1", outcome_report("sft-job1", "P" * 30 + "N" + "T" * 25 + "F"),
                     outcome_report(SHIPPED, "P" * 28 + "N" * 3 + "T" * 24 + "F" * 2), baseline_model=SHIPPED)
    registry.promote(better, note="better recall on the shipped set")
    finished_run("grpo-job2", outcome_report("grpo-job2", "P" * 26 + "N" * 5 + "T" * 24 + "F" * 2), minutes_ago=3)
    finished_run(SHIPPED, outcome_report(SHIPPED, "P" * 28 + "N" * 3 + "T" * 24 + "F" * 2), minutes_ago=2)
    ModelVersion.objects.create(name="grpo-job2", adapter_path="/srv/guardsite/var/training/job-2/final",
                                metrics={"report": outcome_report("grpo-job2", "P" * 26 + "N" * 5 + "T" * 24 + "F" * 2)},
                                provenance={"recipe": "grpo"})


def shoot(page, name: str) -> None:  # noqa: ANN001 - a Playwright page
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("GUARDSITE_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(path, REPO / "docs" / name)


def test_an_admin_rolls_back_to_the_shipped_guard_with_a_reason(signed_in_page):
    from playwright.sync_api import expect

    seed()
    page = signed_in_page("admin", username="alex")
    page.set_viewport_size({"width": WIDTH, "height": 800})
    page.goto("/models/")
    expect(page.locator("#production-model")).to_have_text("sft-job1")
    page.click(f"[data-rollback={SHIPPED}]")
    page.wait_for_url(f"**/models/{SHIPPED}/rollback")
    expect(page.locator("#confirm h1")).to_have_text(f"Roll back to {SHIPPED}?")
    page.click("#confirm-action")  # the browser refuses an empty reason: nothing is sent
    assert page.url.endswith(f"/models/{SHIPPED}/rollback") and not RegistryEvent.objects.filter(action="rollback").exists()
    page.fill("#reason", "sft-job1 over-blocks support questions")
    page.click("#confirm-action")
    page.wait_for_url("**/models/")
    expect(page.locator("#production-model")).to_have_text(SHIPPED)
    expect(page.locator(".messages")).to_contain_text(f"Rolled back: {SHIPPED} is the production model again.")
    expect(page.locator("tr[data-model=grpo-job2] td.gate")).to_contain_text("on guardsite_eval.jsonl (57): 57 records")
    assert RegistryEvent.objects.first().note == "sft-job1 over-blocks support questions"
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    shoot(page, "models-after-rollback.png")
