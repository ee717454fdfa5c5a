"""Dispatch: micro-batch claims, leases, the sweeper, one verdict per item, decided actions, review intake."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from moderation import dispatch
from moderation.models import Item, ReviewTask, Verdict
from moderation.verdicts import category_actions, decided_action, store_verdict
from tests.moderation.conftest import guard_verdict


def make_items(version, count: int, status: str = Item.Status.QUEUED, **fields: object) -> list[Item]:
    return Item.objects.bulk_create([Item(policy_version=version, prompt=f"prompt {n}", status=status, **fields) for n in range(count)])


# ----------------------------------------------------------------- decided action


@pytest.mark.parametrize(
    ("unsafe", "codes", "expected"),
    [
        (False, [], "allow"),
        (True, [], "flag"),
        (True, ["S3"], "allow"),
        (True, ["S3", "S2"], "flag"),
        (True, ["S2", "S1", "S3"], "block"),
        (True, ["S99"], "flag"),
    ],
)
def test_decided_action_is_the_strictest_of_the_predicted_categories(unsafe, codes, expected):
    assert decided_action(unsafe, codes, {"S1": "block", "S2": "flag", "S3": "allow"}) == expected


# ----------------------------------------------------------------- claims and verdicts


def test_claim_takes_at_most_a_micro_batch_oldest_first(house_policy):
    items = make_items(house_policy, 5)
    claimed = dispatch.claim_batch(3, "task-a")
    assert [i.pk for i in claimed] == [i.pk for i in items[:3]]
    assert all(i.status == "running" and i.attempts == 1 and i.leased_until > timezone.now() for i in claimed)
    assert [i.pk for i in dispatch.claim_batch(3, "task-b")] == [i.pk for i in items[3:]]
    assert dispatch.claim_batch(3, "task-c") == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_claimers_never_get_the_same_item(house_policy):
    make_items(house_policy, 120)
    claimed: dict[str, list[int]] = {}

    def claim(token: str) -> None:
        try:
            mine: list[int] = []
            while batch := dispatch.claim_batch(7, token):
                mine += [i.pk for i in batch]
            claimed[token] = mine
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [pk for ids in claimed.values() for pk in ids]
    assert len(every) == len(set(every)) == 120


def test_storing_a_verdict_twice_keeps_the_first(house_policy, quiet_review):
    item = make_items(house_policy, 1, status=Item.Status.RUNNING)[0]
    actions = category_actions(house_policy)
    first, created = store_verdict(item, guard_verdict(categories=("S1",)), actions, "embedded", 5)
    again, created_again = store_verdict(item, guard_verdict(prompt_label="safe", categories=()), actions, "embedded", 5)
    assert created and not created_again
    assert again.pk == first.pk and again.action == "block"
    assert Verdict.objects.filter(item=item).count() == 1
    assert Item.objects.get(pk=item.pk).status == "done"


def test_run_pending_classifies_everything_in_micro_batches(house_policy, tiny_guard, quiet_review, settings):
    settings.MODERATION_MICRO_BATCH_SIZE = 4
    items = make_items(house_policy, 10)
    outcome = dispatch.run_pending(time_budget_s=120)
    assert (outcome.claimed, outcome.stored, outcome.duplicates) == (10, 10, 0)
    assert Verdict.objects.filter(item__in=items).count() == 10
    assert set(Item.objects.values_list("status", flat=True)) == {"done"}


def test_a_guard_failure_gives_the_items_back_for_another_attempt(house_policy, settings, quiet_review):
    settings.GUARD_MODEL_DIR = "/nonexistent/model"
    item = make_items(house_policy, 1)[0]
    outcome = dispatch.run_pending(time_budget_s=30)
    item.refresh_from_db()
    assert outcome.failed == 1
    assert item.status == "queued" and item.attempts == 1 and "/nonexistent/model" in item.last_error


def test_a_guard_failure_on_the_last_attempt_fails_the_item_with_the_reason(house_policy, settings, quiet_review):
    settings.GUARD_MODEL_DIR = "/nonexistent/model"
    settings.MODERATION_MAX_ATTEMPTS = 1
    item = make_items(house_policy, 1)[0]
    dispatch.run_pending(time_budget_s=30)
    item.refresh_from_db()
    assert item.status == "failed" and "guard embedded failed" in item.last_error


# ----------------------------------------------------------------- sweeper


def test_sweeper_requeues_items_whose_lease_ran_out(house_policy):
    stuck = make_items(house_policy, 2, status=Item.Status.RUNNING, attempts=1, leased_until=timezone.now() - timedelta(seconds=1))
    healthy = make_items(house_policy, 1, status=Item.Status.RUNNING, attempts=1, leased_until=timezone.now() + timedelta(minutes=5))
    outcome = dispatch.sweep()
    assert outcome.requeued == 2
    assert set(Item.objects.filter(pk__in=[i.pk for i in stuck]).values_list("status", flat=True)) == {"queued"}
    assert Item.objects.get(pk=healthy[0].pk).status == "running"


def test_sweeper_fails_items_out_of_attempts_with_a_visible_reason(house_policy, settings):
    settings.MODERATION_MAX_ATTEMPTS = 2
    item = make_items(house_policy, 1, status=Item.Status.RUNNING, attempts=2, leased_until=timezone.now() - timedelta(seconds=1))[0]
    assert dispatch.sweep().failed == 1
    item.refresh_from_db()
    assert item.status == "failed" and "gave up after 2 attempt(s)" in item.last_error


def test_sweeper_announces_items_the_broker_never_heard_of(house_policy, settings):
    settings.MODERATION_STALE_PENDING_SECONDS = 0
    item = make_items(house_policy, 1, status=Item.Status.RECEIVED, updated_at=timezone.now() - timedelta(minutes=1))[0]
    assert dispatch.sweep().announced == 1
    item.refresh_from_db()
    assert item.status == "queued"


def test_item_that_got_a_verdict_after_being_requeued_is_done_once(house_policy, quiet_review):
    """A slow worker (not dead) finishing after the sweeper re-queued its batch."""
    item = make_items(house_policy, 1, status=Item.Status.RUNNING, attempts=1, leased_until=timezone.now() - timedelta(seconds=1))[0]
    dispatch.sweep()
    second_claim = dispatch.claim_batch(1, "second-worker")
    actions = category_actions(house_policy)
    store_verdict(item, guard_verdict(), actions, "embedded", 5)  # the slow first worker
    _, created = store_verdict(second_claim[0], guard_verdict(), actions, "embedded", 5)
    assert not created
    assert Verdict.objects.filter(item=item).count() == 1
    assert ReviewTask.objects.filter(item=item).count() == 1


# ----------------------------------------------------------------- review intake


def test_flagged_verdict_enters_the_review_queue(judged_item):
    item = judged_item(verdict=guard_verdict(categories=("S2",), confidence=0.99))
    assert item.verdict.action == "flag"
    assert list(item.review_tasks.values_list("reason", flat=True)) == ["flag"]


def test_blocked_confident_verdict_skips_the_review_queue(judged_item):
    item = judged_item(verdict=guard_verdict(categories=("S1",), confidence=0.99))
    assert item.verdict.action == "block" and not item.review_tasks.exists()


def test_uncertain_verdict_enters_the_review_queue(judged_item, settings):
    settings.MODERATION_UNCERTAIN_LOW, settings.MODERATION_UNCERTAIN_HIGH = 0.3, 0.7
    item = judged_item(verdict=guard_verdict(prompt_label="safe", categories=(), confidence=0.55))
    assert list(item.review_tasks.values_list("reason", flat=True)) == ["uncertain"]


def test_safe_items_are_sampled_for_quality_control(judged_item, settings):
    settings.MODERATION_QC_SAMPLE_RATE = 1.0
    item = judged_item(verdict=guard_verdict(prompt_label="safe", categories=(), confidence=0.01))
    assert list(item.review_tasks.values_list("reason", flat=True)) == ["qc_sample"]


def test_safe_confident_items_outside_the_sample_are_not_reviewed(judged_item):
    item = judged_item(verdict=guard_verdict(prompt_label="safe", categories=(), confidence=0.01))
    assert not item.review_tasks.exists()


def test_a_sampled_item_gets_a_second_independent_review(judged_item, settings):
    settings.MODERATION_DOUBLE_REVIEW_RATE = 1.0
    item = judged_item()
    assert set(item.review_tasks.values_list("reason", flat=True)) == {"flag", "double"}


def test_unparseable_model_answer_is_flagged_for_a_human(judged_item):
    from guard import contract

    broken = contract.failed_verdict(contract.ParseError("missing field(s): categories", "prompt: unsafe"), has_response=False)
    item = judged_item(verdict=broken)
    assert item.verdict.action == "flag" and item.verdict.parse_error
    assert item.review_tasks.filter(reason="flag").exists()
