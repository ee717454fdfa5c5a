"""What the feature benchmarks (``question_suffix.py``, ``tuned_layers.py``) share: the backbone's
states at chosen layers for rows of token ids, computed in length-bucketed batches, and F1."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from guard.backends.gemma_runner import RowCache

ATTACK_FILES = ("aart", "advbench", "catqa", "ailuminate_demo", "harmfulqa", "jbb_artifacts", "jbb_behaviors",
                "strongreject", "synthetic_refusal")


def layer_states(runner: Any, rows: Sequence[list[int]], layers: Sequence[int], what: str) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(row indices, float32 states (len(layers), batch, tokens, hidden)) for every batch of ``rows``: at most 64
    rows and 4,096 padded tokens a batch, as the feature extractor batches on a CPU; the forward stops at the
    deepest layer asked for. Prints progress, counting ``what``."""
    batches: list[list[int]] = []
    for index in sorted(range(len(rows)), key=lambda i: len(rows[i])):
        if batches and len(batches[-1]) < 64 and len(rows[index]) * (len(batches[-1]) + 1) <= 4096:
            batches[-1].append(index)
        else:
            batches.append([index])
    started, done = time.perf_counter(), 0
    with torch.inference_mode():
        for batch in batches:
            width = max(len(rows[i]) for i in batch)
            ids = torch.tensor([rows[i] + [0] * (width - len(rows[i])) for i in batch])
            lengths = torch.tensor([len(rows[i]) for i in batch])
            captured: list[torch.Tensor] = []
            runner.forward(RowCache(runner, len(batch), width, None), ids, lengths, capture=tuple(layers), captured=captured,
                           stop_after=max(layers))
            yield batch, torch.stack(captured, dim=0).float()
            done += len(batch)
            print(f"\r  {what}: {done}/{len(rows)} ({time.perf_counter() - started:.0f} s)", end="", flush=True)
    print()


def f1(gold: np.ndarray, predicted: np.ndarray) -> float:
    """F1 (%) of the positive label."""
    tp = float((gold & predicted).sum())
    return round(200 * tp / max(float(gold.sum() + predicted.sum()), 1.0), 1)
