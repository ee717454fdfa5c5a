"""Retrain from the browser: start a tiny run for a policy and watch its progress to completion."""

from __future__ import annotations

import pytest
from django.conf import settings

from policies.models import Policy
from trainer.models import TrainingJob

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.slow]

DATA_FILE = "jbb_behaviors.jsonl"


def test_a_retrain_started_in_the_browser_runs_to_a_registered_candidate(start_worker, signed_in_page, tiny_model, tmp_path):
    if not (settings.SHARED_DATASETS_DIR / DATA_FILE).exists():
        pytest.skip("the shared corpus is not present")
    start_worker(queues="gpu-train", extra_env={"TRAINING_OUTPUT_DIR": str(tmp_path / "runs")})
    Policy.objects.create(slug="house", name="House rules")
    page = signed_in_page("policy_editor")

    # The policy page's "Retrain guard" link leads here.
    page.goto("/training/new?policy=house")
    assert "Retrain the guard for policy" in page.inner_text("h1")
    page.check("input[name=recipe][value=sft]")
    page.check(f"input[name=data][value='{DATA_FILE}']")
    page.select_option("select[name=base_model]", str(tiny_model))
    page.fill("input[name=max_steps]", "4")
    page.fill("input[name=lora_rank]", "2")
    page.fill("input[name=max_examples]", "4")
    page.fill("input[name=batch_size]", "1")
    page.fill("input[name=eval_limit]", "2")
    page.click("#start-training")
    page.wait_for_url("**/training/*/")
    job = TrainingJob.objects.get()
    assert job.data_sources[-1] == "reviewed:house"

    # htmx polls the progress card until the job is done; the step counter moves on the way.
    page.wait_for_selector("#job-status:text('running')", timeout=120_000)
    page.wait_for_selector("#job-status:text('succeeded')", timeout=300_000)
    assert page.inner_text("#job-step") == "step 4/4"
    assert page.locator("svg.train-chart polyline[data-series=loss]").count() == 1
    page.click("#candidate-link")
    page.wait_for_url(f"**/models/sft-job{job.pk}/")
    assert "candidate" in page.inner_text("h1")
    assert page.locator("#comparison").count() == 1
