"""Real Celery workers: a worker SIGKILLed mid-batch loses nothing and duplicates nothing."""

from __future__ import annotations

import pytest
from django.db.models import Count

from guard.testing import tiny_model_dir
from moderation import dispatch
from moderation.models import Item, Verdict
from tests.conftest import wait_for

ITEM_COUNT = 24
# Long enough that a micro-batch of 4 takes a visible moment on the 18-layer tiny model (a short one is scored in
# milliseconds, and the kill landed between batches).
FILLER = " Please consider every part of this question carefully before answering it." * 120


def worker_env() -> dict[str, str]:
    return {
        "GUARD_MODEL_DIR": str(tiny_model_dir(layers=18)),
        "MODERATION_MICRO_BATCH_SIZE": "4",
        "MODERATION_MICRO_BATCH_WAIT_MS": "0",
        "MODERATION_LEASE_SECONDS": "3",
        "MODERATION_QC_SAMPLE_RATE": "0",
        "MODERATION_DOUBLE_REVIEW_RATE": "0",
    }


def counts() -> dict[str, int]:
    return dict(Item.objects.values_list("status").annotate(n=Count("id")))


@pytest.mark.worker
def test_worker_killed_mid_batch_loses_nothing_and_produces_no_duplicate_verdicts(start_worker, api, house_policy):
    first = start_worker(queues="gpu-infer", extra_env=worker_env())
    body = {"policy": "house", "mode": "fast", "items": [{"prompt": f"Question number {n}?{FILLER}"} for n in range(ITEM_COUNT)]}
    ids = api.post("/api/v1/items", body).json()["ids"]
    assert len(ids) == ITEM_COUNT

    # Kill the worker (SIGKILL, parent and child) while a batch is claimed but not finished.
    def batch_in_flight() -> bool:
        now = counts()
        return 4 <= now.get("done", 0) <= ITEM_COUNT - 8 and now.get("running", 0) > 0

    wait_for(batch_in_flight, timeout=120, interval=0.02, message="a batch in flight")
    first.kill_hard()
    at_kill = counts()
    orphaned = set(Item.objects.filter(status="running").values_list("pk", flat=True))
    assert orphaned, f"the kill did not land mid-batch: {at_kill}"
    assert at_kill.get("done", 0) < ITEM_COUNT

    # The sweeper re-queues the orphans once their lease ran out; a new worker finishes the job.
    wait_for(lambda: dispatch.sweep().requeued, timeout=30, interval=0.5, message="the sweeper to re-queue expired leases")
    start_worker(queues="gpu-infer", extra_env=worker_env())
    wait_for(lambda: counts() == {"done": ITEM_COUNT}, timeout=180, interval=0.3, message="every item done")

    assert Verdict.objects.filter(item_id__in=ids).count() == ITEM_COUNT
    assert not Item.objects.filter(pk__in=ids, verdict__isnull=True).exists()
    assert set(Item.objects.filter(pk__in=orphaned).values_list("attempts", flat=True)) == {2}
