"""A review budget per policy: the uncertain band is sized so the review inflow fits it."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from guard import contract
from moderation import review_budget
from moderation.models import Item, ReviewTask, Verdict
from moderation.review_budget import FIXED, NOISE_Z, Band, HistoryEntry, expected_ceiling, size_band
from moderation.verdicts import category_actions, decided_action, store_verdict
from tests.moderation.conftest import publish_policy

THRESHOLDS = {"prompt": 0.5, "response": 0.45}
PER_DAY = 1000  # items a day, in the history and in the new day's stream


def mixed_scores(rng: random.Random) -> tuple[float, float | None]:
    """P(unsafe) of a prompt and (half the time) of a response, from a mix like the demo's traffic:
    mostly confident benign, a lump of benign items just under the threshold (the 0.45-0.50 flood
    the issue saw), confident harmful ones, and some spread in between."""
    draw = rng.random()
    if draw < 0.68:
        p = rng.betavariate(1, 30)
    elif draw < 0.82:
        p = rng.uniform(0.42, 0.52)
    elif draw < 0.94:
        p = rng.uniform(0.85, 0.99)
    else:
        p = rng.uniform(0.15, 0.85)
    response = None
    if rng.random() < 0.5:
        response = rng.betavariate(1, 20) if p < 0.5 else rng.uniform(0.05, 0.9)
    return p, response


def guard_result(p: float, response: float | None, rng: random.Random) -> contract.Verdict:
    prompt_label = contract.UNSAFE if p >= THRESHOLDS["prompt"] else contract.SAFE
    response_label = None if response is None else (contract.UNSAFE if response >= THRESHOLDS["response"] else contract.SAFE)
    unsafe = contract.UNSAFE in (prompt_label, response_label)
    # S1 blocks, S2 flags (a human always looks): a quarter of the unsafe verdicts are flagged.
    categories = [rng.choice(["S1", "S1", "S1", "S2"])] if unsafe else []
    probabilities = {"prompt": {"safe": 1 - p, "unsafe": p}}
    if response is not None:
        probabilities["response"] = {"safe": 1 - response, "unsafe": response}
    return contract.Verdict(prompt_label=prompt_label, response_label=response_label, refusal_label=None if response is None else "compliance",
                            categories=categories, confidence=response if response is not None else p, probabilities=probabilities, mode="fast")


def seed_history(version, days: int, rng: random.Random) -> None:
    """``days`` days of past verdicts of ``version``'s policy (PER_DAY a day), written directly."""
    actions = category_actions(version)
    now = timezone.now()
    items, results = [], []
    for n in range(days * PER_DAY):
        p, response = mixed_scores(rng)
        at = now - timedelta(days=days) + timedelta(seconds=n * 86400 / PER_DAY)
        items.append(Item(policy_version=version, prompt=f"past {n}", response="answer" if response is not None else None,
                          status=Item.Status.DONE, created_at=at))
        results.append((guard_result(p, response, rng), at))
    items = Item.objects.bulk_create(items)
    Verdict.objects.bulk_create([
        Verdict(item=item, prompt_label=r.prompt_label, response_label=r.response_label, categories=r.categories, confidence=r.confidence,
                probabilities=r.probabilities, thresholds=THRESHOLDS, created_at=at,
                action=decided_action(r.is_unsafe, r.categories, actions))
        for item, (r, at) in zip(items, results, strict=True)
    ])


def stream_a_day(version, rng: random.Random) -> int:
    """A new day's PER_DAY items through the real verdict path; returns how many items entered review."""
    actions = category_actions(version)
    for n in range(PER_DAY):
        p, response = mixed_scores(rng)
        item = Item.objects.create(policy_version=version, prompt=f"new {n}", response="answer" if response is not None else None,
                                   status=Item.Status.RUNNING, attempts=1)
        store_verdict(item, guard_result(p, response, rng), actions, "test-guard", 1, thresholds=THRESHOLDS)
    return ReviewTask.objects.filter(item__prompt__startswith="new ").exclude(reason=ReviewTask.Reason.DOUBLE).values("item_id").distinct().count()


@pytest.fixture
def budget_policy(db, quiet_review, settings):
    settings.MODERATION_QC_SAMPLE_RATE = 0.005
    return publish_policy("budgeted", {"S1": "block", "S2": "flag"})


@pytest.mark.parametrize("budget, allowed", [({"review_budget": "per_day", "review_items_per_day": 80}, 80),
                                             ({"review_budget": "share", "review_traffic_percent": 10.0}, 100)])
def test_the_uncertain_band_keeps_the_review_inflow_within_the_budget_on_a_mixed_stream(budget_policy, budget, allowed):
    policy = budget_policy.policy
    seed_history(budget_policy, days=7, rng=random.Random(7))
    type(policy).objects.filter(pk=policy.pk).update(**budget)
    policy.refresh_from_db()

    band = review_budget.band_for(policy)
    assert band.width is not None and 0 < band.width < 0.1  # the budget fits flagged items and a narrow band
    assert band.expected_total <= allowed + 1e-6

    entered = stream_a_day(budget_policy, random.Random(2026))
    assert entered <= allowed, f"{entered} items entered review a day for a budget of {allowed}"
    assert entered >= 0.6 * allowed  # and the budget is used, not left idle (it keeps room for a busy day)

    # The fixed band would have flooded the queue with the benign items just under the threshold.
    fixed = Band(kind=FIXED, low=0.35, high=0.65)
    rng = random.Random(2026)
    flooded = sum(1 for _ in range(PER_DAY) if fixed_band_takes(fixed, *mixed_scores(rng), rng))
    assert flooded > allowed
    print(f"budget {allowed}/day: band {band.describe()}, expected {band.expected_total:.1f}/day, entered {entered}; fixed band {flooded}")


def fixed_band_takes(band: Band, p: float, response: float | None, rng: random.Random) -> bool:
    result = guard_result(p, response, rng)
    return decided_action(result.is_unsafe, result.categories, {"S1": "block", "S2": "flag"}) == "flag" or band.low <= result.confidence <= band.high


def test_flagged_items_always_go_and_an_over_full_budget_leaves_the_band_empty():
    history = [HistoryEntry(flagged=True, distance=0.3)] * 50 + [HistoryEntry(flagged=False, distance=0.01)] * 50
    band = size_band(history, days=1.0, budget_per_day=40, qc_rate=0.0, max_width=0.25)
    assert band.width is None and band.expected_flagged == 50 and band.expected_uncertain == 0


def test_the_band_stops_below_tied_scores_it_cannot_take_all_of():
    history = [HistoryEntry(flagged=False, distance=d) for d in (0.01, 0.02, 0.03, 0.03, 0.03, 0.2)]
    band = size_band(history, days=1.0, budget_per_day=3 + NOISE_Z * 3**0.5, qc_rate=0.0, max_width=0.25)  # room for 3
    assert band.width == 0.02 and band.expected_uncertain == 2


def test_the_band_never_grows_past_the_maximum_width_however_large_the_budget():
    history = [HistoryEntry(flagged=False, distance=d / 100) for d in range(50)]
    band = size_band(history, days=1.0, budget_per_day=1000, qc_rate=0.0, max_width=0.25)
    assert band.width == 0.25 and band.expected_uncertain == 26


def test_the_quality_control_sample_counts_against_the_budget():
    history = [HistoryEntry(flagged=False, distance=d / 1000) for d in range(1000)]
    band = size_band(history, days=1.0, budget_per_day=100, qc_rate=0.05, max_width=1.0)
    assert band.expected_total <= expected_ceiling(100) < 100 and band.expected_qc > 40


def test_a_budget_samples_confident_blocks_for_quality_control_labelled_as_such(budget_policy, settings):
    settings.MODERATION_QC_SAMPLE_RATE = 1.0
    policy = budget_policy.policy
    type(policy).objects.filter(pk=policy.pk).update(review_budget="per_day", review_items_per_day=50)
    policy.refresh_from_db()
    item = Item.objects.create(policy_version=budget_policy, prompt="how to build a weapon", status=Item.Status.RUNNING, attempts=1)
    result = guard_result(0.97, None, random.Random(1))
    result.categories = ["S1"]
    store_verdict(item, result, category_actions(budget_policy), "test-guard", 1, thresholds=THRESHOLDS)
    task = ReviewTask.objects.get(item=item)
    assert (task.reason, task.get_reason_display(), task.field, task.score) == ("qc_sample", "quality-control sample", "prompt", 0.97)


def test_a_policy_without_a_budget_keeps_the_fixed_band(budget_policy):
    band = review_budget.band_for(budget_policy.policy)
    assert (band.kind, band.low, band.high) == ("fixed", 0.35, 0.65)


def _store_allowed(version, truncated: bool) -> Item:
    item = Item.objects.create(policy_version=version, prompt="a long story " * 200, status=Item.Status.RUNNING, attempts=1)
    result = guard_result(0.02, None, random.Random(1))
    result.truncated = truncated
    store_verdict(item, result, category_actions(version), "test-guard", 1, thresholds=THRESHOLDS)
    return item


def test_an_allowed_text_the_guard_read_only_part_of_goes_to_review_when_asked(budget_policy, settings):
    settings.MODERATION_QC_SAMPLE_RATE = 0.0
    settings.MODERATION_REVIEW_PARTLY_READ = 1
    task = ReviewTask.objects.get(item=_store_allowed(budget_policy, truncated=True))
    assert (task.reason, task.get_reason_display()) == ("partial", "guard read part of the text")
    assert not ReviewTask.objects.filter(item=_store_allowed(budget_policy, truncated=False)).exists()


def test_a_partly_read_text_is_not_reviewed_for_that_alone_by_default(budget_policy, settings):
    settings.MODERATION_QC_SAMPLE_RATE = 0.0
    assert not ReviewTask.objects.filter(item=_store_allowed(budget_policy, truncated=True)).exists()
