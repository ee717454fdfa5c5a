"""A trainable copy of a few of the backbone's upper decoder layers, run on states the runner captured.

The heads read mean-pooled hidden states of a frozen backbone, and every head tried on them lands on one
plateau (docs/guard.md). Fine-tuning a copy of layers ``cut`` to ``top - 1`` (12-14 of the embedded
model's 18) on the residual stream after layer ``cut`` lifts chat traffic above it on a CPU
(``bench/tuned_layers.py``): only those layers run forward and backward, and the stream below them is
computed once. The copy leaves the served model untouched (reason mode and the zero-shot space read its
own layers).

The rows are right-padded with per-row lengths, as the runner pads them; they are far shorter than the
sliding window, so one causal mask over each row's real tokens serves every layer type.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class TunedLayers(nn.Module):
    """A trainable copy of ``decoder.layers[cut:top]`` (a Hugging Face Gemma 3 text decoder)."""

    def __init__(self, decoder: Any, cut: int, top: int) -> None:
        super().__init__()
        if not 0 < cut < top <= len(decoder.layers):
            raise ValueError(f"layers {cut}..{top - 1}: the decoder has {len(decoder.layers)} layers")
        self.cut, self.top = cut, top
        self.layers = nn.ModuleList(copy.deepcopy(decoder.layers[cut:top]))
        self.rotary = decoder.rotary_emb
        self.types = list(decoder.config.layer_types[cut:top])
        self.requires_grad_(True)  # the served model's weights come frozen

    def forward(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, hidden) residuals after layer ``cut`` of right-padded rows -> the residuals after ``top - 1``."""
        batch, width, _ = states.shape
        positions = torch.arange(width, device=states.device)[None].expand(batch, width)
        rope = {kind: self.rotary(states, positions, kind) for kind in set(self.types)}
        columns = torch.arange(width, device=states.device)
        visible = torch.ones(width, width, dtype=torch.bool, device=states.device).tril()[None] & (columns[None, :] < lengths[:, None])[:, None]
        mask = torch.zeros(batch, 1, width, width, dtype=states.dtype, device=states.device).masked_fill(~visible[:, None], -1e9)
        for layer, kind in zip(self.layers, self.types, strict=True):
            out = layer(states, position_embeddings=rope[kind], attention_mask=mask, position_ids=positions)
            states = out[0] if isinstance(out, tuple) else out
        return states


def mean_over_text(states: torch.Tensor, lengths: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """(B, hidden): each row's mean over its tokens from ``starts`` to ``lengths`` (the pooled text runs to the row's end)."""
    columns = torch.arange(states.shape[1], device=states.device)[None]
    weights = ((columns >= starts[:, None]) & (columns < lengths[:, None])).to(states.dtype)
    return torch.einsum("bt,bth->bh", weights / weights.sum(1, keepdim=True), states)
