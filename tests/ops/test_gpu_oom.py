"""A GPU out-of-memory during a batch: the worker halves the batch and goes on.

The fault is injected where CUDA raises it, in the model's forward pass
(``torch.cuda.OutOfMemoryError`` whenever more than two rows are fed at
once), on CPU with the tiny model; the worker's code path is the real one
(``moderation.dispatch.run_pending``, what ``classify_pending`` runs).
The halving helper itself is specified in tests/guard/test_transformers_backend.py.
"""

from __future__ import annotations

import pytest
import torch

from guard.runtime import get_backend, reset_backends
from moderation import dispatch
from moderation.models import Item, Verdict
from tests.ops.conftest import publish_policy

ITEMS = 12


class SmallGpu:
    """The model forward (``runner.forward(cache, ids, ...)``) of a GPU with room for ``rows`` sequences at a time."""

    def __init__(self, forward, rows: int) -> None:  # noqa: ANN001
        self.forward = forward
        self.rows = rows
        self.batch_sizes: list[int] = []

    def __call__(self, cache, ids, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
        rows = ids.shape[0]
        self.batch_sizes.append(rows)
        if rows > self.rows:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB for {rows} rows (injected)")
        return self.forward(cache, ids, *args, **kwargs)


@pytest.fixture
def tiny_backend(settings):
    from guard.testing import tiny_model_dir

    settings.GUARD_MODEL_DIR = str(tiny_model_dir())
    settings.MODERATION_MICRO_BATCH_SIZE = 8
    settings.MODERATION_MICRO_BATCH_WAIT_MS = 0
    settings.MODERATION_QC_SAMPLE_RATE = 0.0
    settings.MODERATION_DOUBLE_REVIEW_RATE = 0.0
    reset_backends()
    backend = get_backend()
    backend.max_batch_size = 8
    yield backend
    reset_backends()


def submit(count: int) -> list[int]:
    version = publish_policy("oom")
    items = [Item.objects.create(policy_version=version, prompt=f"Question {n}: how do I whittle a spoon?", status="queued") for n in range(count)]
    return [item.pk for item in items]


@pytest.mark.django_db
def test_out_of_memory_mid_batch_halves_the_batch_and_every_item_gets_one_verdict(tiny_backend, monkeypatch):
    small = SmallGpu(tiny_backend.runner.forward, rows=2)
    monkeypatch.setattr(tiny_backend.runner, "forward", small)
    ids = submit(ITEMS)

    outcome = dispatch.run_pending(time_budget_s=120)

    assert (outcome.claimed, outcome.stored, outcome.failed) == (ITEMS, ITEMS, 0)
    assert 8 in small.batch_sizes and max(small.batch_sizes) == 8  # the first attempt was the full micro-batch
    assert small.batch_sizes.count(8) == 1  # ... then the worker kept the smaller size
    assert Verdict.objects.filter(item_id__in=ids).count() == ITEMS
    # Done at the first attempt: nothing was given back to the queue or retried by another delivery.
    assert set(Item.objects.filter(pk__in=ids).values_list("status", "attempts")) == {("done", 1)}


@pytest.mark.django_db
def test_halving_changes_no_verdict(tiny_backend, monkeypatch):
    ids = submit(6)
    dispatch.run_pending(time_budget_s=120)
    roomy = {v.item.prompt: (v.prompt_label, v.categories) for v in Verdict.objects.filter(item_id__in=ids).select_related("item")}
    Verdict.objects.all().delete()
    Item.objects.filter(pk__in=ids).update(status="queued", attempts=0)

    monkeypatch.setattr(tiny_backend.runner, "forward", SmallGpu(tiny_backend.runner.forward, rows=1))
    dispatch.run_pending(time_budget_s=120)
    cramped = {v.item.prompt: (v.prompt_label, v.categories) for v in Verdict.objects.filter(item_id__in=ids).select_related("item")}
    assert cramped == roomy


@pytest.mark.django_db
def test_out_of_memory_even_for_one_request_gives_the_items_back_with_the_reason(tiny_backend, monkeypatch):
    monkeypatch.setattr(tiny_backend.runner, "forward", SmallGpu(tiny_backend.runner.forward, rows=0))
    ids = submit(3)
    outcome = dispatch.run_pending(time_budget_s=60)
    assert outcome.failed == 3 and outcome.stored == 0
    items = list(Item.objects.filter(pk__in=ids))
    assert {i.status for i in items} == {"queued"}  # back in the queue for another attempt, not lost
    assert all("out of GPU memory" in i.last_error for i in items)
    assert not Verdict.objects.filter(item_id__in=ids).exists()
