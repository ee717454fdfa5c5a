"""Fair dispatch: one client's backlog cannot starve another's items; a per-key cap on queued work."""

from __future__ import annotations

import pytest

from guard.testing import tiny_model_dir
from moderation import dispatch
from moderation.models import Item, Verdict
from tests.conftest import wait_for
from tests.moderation.conftest import ApiClient

ITEMS = "/api/v1/items"


def queue(version, client, count: int, text: str = "prompt") -> list[Item]:  # noqa: ANN001
    return Item.objects.bulk_create(
        [Item(policy_version=version, client=client, prompt=f"{text} {n}", status=Item.Status.QUEUED) for n in range(count)]
    )


# ----------------------------------------------------------------- batches


def test_round_robin_takes_one_item_from_each_lane_in_turn():
    lanes = [[(1, 10), (2, 10), (3, 10)], [(7, 10)], [(8, 10), (9, 10)]]
    assert dispatch.fair_pick(lanes, size=5, max_chars=1000) == [1, 7, 8, 2, 9]


def test_a_batch_stops_at_its_character_budget_but_is_never_empty():
    assert dispatch.fair_pick([[(1, 900), (2, 900)]], size=8, max_chars=1000) == [1]
    assert dispatch.fair_pick([[(1, 5000)]], size=8, max_chars=1000) == [1]


def test_a_second_keys_item_is_in_the_next_batch_behind_the_first_keys_backlog(house_policy, make_key):
    first, _ = make_key("bulk-client")
    second, _ = make_key("small-client")
    backlog = queue(house_policy, first, 20)
    (theirs,) = queue(house_policy, second, 1)

    claimed = [i.pk for i in dispatch.claim_batch(4, "worker")]

    assert theirs.pk in claimed
    assert [pk for pk in claimed if pk != theirs.pk] == [i.pk for i in backlog[:3]]  # oldest first within a key


def test_items_of_two_policies_share_the_batches(house_policy, make_key):
    from tests.moderation.conftest import publish_policy

    key, _ = make_key()
    other = publish_policy("other")
    queue(house_policy, key, 10)
    (late,) = queue(other, key, 1)
    assert late.pk in [i.pk for i in dispatch.claim_batch(2, "worker")]


def test_huge_items_make_smaller_batches(house_policy, make_key, settings):
    settings.MODERATION_MICRO_BATCH_MAX_CHARS = 20000
    settings.GUARD_MAX_INPUT_TOKENS = 2048  # a text counts at most 8,192 characters
    key, _ = make_key()
    queue(house_policy, key, 5, text="x" * 30000)
    assert len(dispatch.claim_batch(32, "worker")) == 2


@pytest.mark.worker
def test_a_second_keys_item_is_judged_before_the_first_keys_backlog_finishes(start_worker, make_key, house_policy):
    _, bulk_secret = make_key("bulk-client")
    _, small_secret = make_key("small-client")
    bulk = [i for i in ApiClient(bulk_secret).post(ITEMS, {"policy": "house", "items": [{"prompt": "x" * 3000 + str(n)} for n in range(16)]}).json()["ids"]]
    (small,) = ApiClient(small_secret).post(ITEMS, {"policy": "house", "items": [{"prompt": "Is this fine?"}]}).json()["ids"]
    start_worker(queues="gpu-infer", extra_env={
        "GUARD_MODEL_DIR": str(tiny_model_dir()), "MODERATION_MICRO_BATCH_SIZE": "2", "MODERATION_MICRO_BATCH_WAIT_MS": "0",
        "MODERATION_QC_SAMPLE_RATE": "0", "MODERATION_DOUBLE_REVIEW_RATE": "0",
    })

    wait_for(lambda: Verdict.objects.filter(item_id=small).exists(), timeout=180, message="the second key's item judged")
    wait_for(lambda: Verdict.objects.filter(item_id__in=bulk).count() == len(bulk), timeout=300, message="the backlog judged")

    small_verdict = Verdict.objects.get(item_id=small)
    judged_before = Verdict.objects.filter(item_id__in=bulk, id__lt=small_verdict.id).count()
    assert judged_before <= 1, f"{judged_before} of the first key's items were judged before the second key's one"
    assert small_verdict.batch_size == 2


# ----------------------------------------------------------------- per-key cap on queued work


def test_a_batch_over_the_keys_queue_cap_is_429_with_retry_after(api, house_policy, settings):
    settings.MODERATION_MAX_QUEUED_PER_KEY = 5
    assert api.post(ITEMS, {"policy": "house", "items": [{"prompt": f"p{n}"} for n in range(3)]}).status_code == 202

    response = api.post(ITEMS, {"policy": "house", "items": [{"prompt": f"q{n}"} for n in range(3)]})

    assert response.status_code == 429
    body = response.json()
    assert body["error"] == "queue_full"
    assert "3 item(s) waiting to be judged" in body["detail"] and "limit is 5 queued items per key" in body["detail"]
    assert "MODERATION_MAX_QUEUED_PER_KEY" in body["detail"]
    assert 5 <= int(response["Retry-After"]) <= 600
    assert Item.objects.count() == 3


def test_a_batch_that_fills_the_cap_exactly_is_accepted(api, house_policy, settings):
    settings.MODERATION_MAX_QUEUED_PER_KEY = 5
    api.post(ITEMS, {"policy": "house", "items": [{"prompt": f"p{n}"} for n in range(3)]})
    assert api.post(ITEMS, {"policy": "house", "items": [{"prompt": "a"}, {"prompt": "b"}]}).status_code == 202


def test_judged_items_no_longer_count_against_the_cap(api, house_policy, settings):
    settings.MODERATION_MAX_QUEUED_PER_KEY = 3
    api.post(ITEMS, {"policy": "house", "items": [{"prompt": f"p{n}"} for n in range(3)]})
    Item.objects.update(status=Item.Status.DONE)
    assert api.post(ITEMS, {"policy": "house", "items": [{"prompt": f"q{n}"} for n in range(3)]}).status_code == 202


def test_one_keys_full_queue_does_not_refuse_another_key(api, make_key, house_policy, settings):
    settings.MODERATION_MAX_QUEUED_PER_KEY = 2
    api.post(ITEMS, {"policy": "house", "items": [{"prompt": "a"}, {"prompt": "b"}]})
    _, other = make_key("other-client")
    assert ApiClient(other).post(ITEMS, {"policy": "house", "items": [{"prompt": "c"}]}).status_code == 202
