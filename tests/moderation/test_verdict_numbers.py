"""The numbers beside a verdict: the calibrated threshold that decided each label, per-item time and batch size."""

from __future__ import annotations

from guard.models import ModelVersion
from guard.testing import tiny_model_dir
from moderation import dispatch
from moderation.models import Item, ReviewTask, Verdict
from moderation.verdicts import Timing, category_actions, store_verdict
from policies.models import Policy
from tests.moderation.conftest import guard_verdict, publish_policy


def calibrated_tiny_model(name: str = "tiny-calibrated", prompt: float = 0.3) -> ModelVersion:
    return ModelVersion.objects.create(
        name=name, base_model_path=str(tiny_model_dir()), metrics={"calibration": {"thresholds": {"prompt": prompt}}}
    )


def stored(version, label: str, p_unsafe: float, categories: tuple[str, ...] = (), **timing: int) -> Item:  # noqa: ANN001
    verdict = guard_verdict(prompt_label=label, categories=categories, confidence=p_unsafe)
    verdict.probabilities = {"prompt": {"safe": round(1 - p_unsafe, 3), "unsafe": p_unsafe}}
    item = Item.objects.create(policy_version=version, prompt="Is this fine?", status=Item.Status.RUNNING)
    store_verdict(item, verdict, category_actions(version), "guard-v2", 0, timing=Timing(**timing) if timing else None, thresholds={"prompt": 0.757})
    return item


# ----------------------------------------------------------------- thresholds


def test_the_item_page_shows_the_threshold_that_decided_a_label(client_as, house_policy, quiet_review):
    item = stored(house_policy, "safe", 0.508)
    page = client_as("viewer").get(f"/items/{item.pk}/").content.decode()
    assert "P(unsafe) 0.508, threshold 0.757 → safe" in page


def test_the_review_page_shows_the_threshold_beside_the_probability(client_as, house_policy, quiet_review):
    item = stored(house_policy, "unsafe", 0.8, categories=("S2",))
    assert ReviewTask.objects.filter(item=item).exists()
    reviewer = client_as("reviewer")
    reviewer.post("/review/next/")
    assert "P(unsafe) 0.800, threshold 0.757 → unsafe" in reviewer.get("/review/").content.decode()


def test_a_label_without_a_threshold_says_the_most_probable_label_won(client_as, house_policy, quiet_review):
    verdict = guard_verdict(prompt_label="unsafe", categories=("S2",), confidence=0.6)
    verdict.probabilities = {"prompt": {"safe": 0.4, "unsafe": 0.6}}
    item = Item.objects.create(policy_version=house_policy, prompt="p", status=Item.Status.RUNNING)
    store_verdict(item, verdict, category_actions(house_policy), "embedded", 5)
    page = client_as("viewer").get(f"/items/{item.pk}/").content.decode()
    assert "P(unsafe) 0.600, no threshold: most probable label → unsafe" in page


def test_verdicts_record_the_thresholds_of_the_model_that_judged_them(db, quiet_review, settings):
    settings.MODERATION_MICRO_BATCH_SIZE = 4
    version = publish_policy("calibrated")
    Policy.objects.filter(pk=version.policy_id).update(production_model=calibrated_tiny_model(prompt=0.3))
    Item.objects.create(policy_version=version, prompt="Is this fine?", status=Item.Status.QUEUED)
    dispatch.run_pending(time_budget_s=120)
    verdict = Verdict.objects.get()
    assert verdict.thresholds == {"prompt": 0.3}
    unsafe = verdict.probabilities["prompt"]["unsafe"]
    assert verdict.prompt_label == ("unsafe" if unsafe >= 0.3 else "safe")


def test_the_console_shows_the_threshold_beside_the_probability(client_as, quiet_review):
    publish_policy("calibrated")
    calibrated_tiny_model(prompt=0.3)
    data = {"version": "1", "prompt": "How do I make a fake ID?", "response": "", "mode": "fast", "model": "tiny-calibrated"}
    html = client_as("viewer").post("/policies/calibrated/console/", data, HTTP_HX_REQUEST="true").content.decode()
    assert "threshold 0.300 →" in html and "P(unsafe)" in html


def test_the_api_answers_with_probabilities_and_thresholds(api, quiet_review):
    version = publish_policy("calibrated")
    Policy.objects.filter(pk=version.policy_id).update(production_model=calibrated_tiny_model(prompt=0.3))
    body = api.post("/api/v1/moderate", {"prompt": "Is this fine?", "policy": "calibrated"}).json()
    assert body["thresholds"] == {"prompt": 0.3}
    assert set(body["probabilities"]["prompt"]) >= {"safe", "unsafe"}
    assert (body["batch_size"], body["batch_ms"]) == (1, body["latency_ms"])


# ----------------------------------------------------------------- time per item


def test_each_item_records_its_share_of_the_batch_time_and_the_batch_size(house_policy, tiny_guard, quiet_review, settings):
    settings.MODERATION_MICRO_BATCH_SIZE = 4
    settings.MODERATION_MICRO_BATCH_WAIT_MS = 0
    Item.objects.bulk_create(
        [Item(policy_version=house_policy, prompt=text, status=Item.Status.QUEUED) for text in ("short?", "a" * 400, "b" * 1600)]
    )
    dispatch.run_pending(time_budget_s=120)
    verdicts = list(Verdict.objects.order_by("item_id"))
    assert {v.batch_size for v in verdicts} == {3}
    (batch_ms,) = {v.batch_ms for v in verdicts}
    assert abs(sum(v.latency_ms for v in verdicts) - batch_ms) <= 2
    assert verdicts[0].latency_ms <= verdicts[1].latency_ms <= verdicts[2].latency_ms  # longer text, larger share


def test_the_item_page_shows_the_per_item_time_and_the_batch(client_as, house_policy, quiet_review):
    item = stored(house_policy, "safe", 0.1, latency_ms=221, batch_size=5, batch_ms=1105)
    page = client_as("viewer").get(f"/items/{item.pk}/").content.decode()
    assert "221 ms (its share of a batch of 5 in 1105 ms)" in page
