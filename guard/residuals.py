"""The backbone's residual stream after one layer, for whole token rows, in length-bucketed batches.

Three readers run the backbone only up to a layer and keep every token's state there: the features
(``guard.features``: several layers pooled per span), the tuned prompt layers' fit
(``guard.layer_tuning.prompt_residuals``: each prompt's states after layer 12, kept to tune layers 12-14 on)
and the peak reader (``guard.peak_reading``: the tuned copy's output at every token of a long prompt). The
batching and the stopped forward are the same for all three and live here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from guard.backends.gemma_runner import RowCache

Log = Callable[[str], None]
# Called with each batch's row indices, its (B, T, hidden) states after the layer (runner dtype) and its lengths.
BatchStates = Callable[[list[int], torch.Tensor, torch.Tensor], None]


def length_batches(lengths: Sequence[int], max_tokens: int, max_rows: int | None = None) -> list[list[int]]:
    """Row indices, shortest row first, cut into batches of at most ``max_tokens`` padded tokens (a row longer
    than that is a batch of its own) and at most ``max_rows`` rows."""
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        size = lengths[index]
        full = max(width, size) * (len(current) + 1) > max_tokens or (max_rows is not None and len(current) >= max_rows)
        if current and full:
            batches.append(current)
            current, width = [], 0
        current.append(index)
        width = max(width, size)
    if current:
        batches.append(current)
    return batches


def padded(runner: Any, rows: Sequence[Sequence[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ``rows`` right-padded into one (B, T) id tensor, and their lengths, on the runner's device."""
    width = max(len(row) for row in rows)
    ids = torch.tensor([[*row, *[pad] * (width - len(row))] for row in rows], dtype=torch.long, device=runner.device)
    return ids, torch.tensor([len(row) for row in rows], dtype=torch.long, device=runner.device)


@torch.inference_mode()
def layer_states(runner: Any, rows: Sequence[Sequence[int]], layer: int, on_batch: BatchStates, *, max_tokens: int,
                 max_rows: int | None = None, log: Log | None = None, what: str = "rows") -> None:
    """Runs the backbone (a ``GemmaRunner``) over token ``rows`` up to ``layer`` and no further, in
    length-bucketed batches, and hands each batch's states after that layer to ``on_batch``. Causal attention
    and right padding keep a row's states free of the batch it is in. Logs progress every 20 s when ``log``."""
    started = last = time.perf_counter()
    done = 0
    for batch in length_batches([len(row) for row in rows], max_tokens, max_rows):
        ids, lengths = padded(runner, [rows[i] for i in batch])
        captured: list[torch.Tensor] = []
        runner.forward(RowCache(runner, len(batch), ids.shape[1], None), ids, lengths, capture=(layer,), captured=captured,
                       stop_after=layer)
        on_batch(batch, captured[0], lengths)
        done += len(batch)
        if log and (time.perf_counter() - last > 20 or done == len(rows)):
            last = time.perf_counter()
            log(f"  layer {layer} states: {done}/{len(rows)} {what} ({last - started:.0f} s)")
