"""Batch shapes for the transformers backend: length buckets and halving on out-of-memory."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from guard.backends.base import GuardError

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

# Rows share a policy head's KV only when it is at least this long.
MIN_SHARED_PREFIX = 16


def run_in_halving_batches(
    fn: Callable[[list[ItemT]], list[ResultT]],
    items: Sequence[ItemT],
    batch_size: int,
    *,
    on_out_of_memory: Callable[[int], None] | None = None,
) -> list[ResultT]:
    """Apply ``fn`` to consecutive batches of ``items``; on ``torch.OutOfMemoryError``
    (``torch.cuda.OutOfMemoryError`` is the same class) halve the batch size and
    retry the failed batch, down to 1. The reduced size is kept for the rest.

    ``on_out_of_memory(new_size)`` runs after each failure, outside the except
    block so the failed batch's tensors are already released.
    """
    results: list[ResultT] = []
    size = max(1, int(batch_size))
    start = 0
    while start < len(items):
        chunk = list(items[start : start + size])
        failed = False
        try:
            out = fn(chunk)
        except torch.OutOfMemoryError as error:
            if size == 1:
                raise GuardError("out of GPU memory even for a batch of one request") from error
            failed = True
        if failed:
            size = max(1, size // 2)
            logger.warning("guard batch ran out of memory; retrying with batch size %d", size)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if on_out_of_memory is not None:
                on_out_of_memory(size)
            continue
        if len(out) != len(chunk):
            raise RuntimeError(f"batch function returned {len(out)} results for {len(chunk)} items")
        results.extend(out)
        start += len(chunk)
    return results


def partition(
    sizes: Sequence[int], overhead: float, *, max_rows: int | None = None, max_tokens: int | None = None
) -> list[tuple[int, int]]:
    """Cut rows sorted by length (shortest first) into consecutive ``(first, end)``
    ranges minimising padded tokens (rows x longest) plus ``overhead`` per range, with
    at most ``max_rows`` rows and ``max_tokens`` padded tokens a range (a single row
    may exceed it). Dynamic programming over the cut points."""
    count = len(sizes)
    best = [0.0] + [float("inf")] * count
    cut = [0] * (count + 1)
    for end in range(1, count + 1):
        longest = sizes[end - 1]
        lowest = max(0, end - max_rows) if max_rows else 0
        for first in range(end - 1, lowest - 1, -1):
            rows = end - first
            if max_tokens and rows > 1 and rows * longest > max_tokens:
                break
            cost = best[first] + rows * longest + overhead
            if cost < best[end]:
                best[end], cut[end] = cost, first
    ranges = []
    end = count
    while end > 0:
        ranges.append((cut[end], end))
        end = cut[end]
    return ranges[::-1]
