"""A trainable copy of a few of the backbone's upper decoder layers, run on states the runner captured.

The heads read mean-pooled hidden states of a frozen backbone, and every head tried on them lands on one
plateau (docs/guard.md). Fine-tuning a copy of layers ``cut`` to ``top - 1`` (12-14 of the embedded
model's 18) on the residual stream after layer ``cut`` lifts chat traffic above it on a CPU
(``bench/tuned_layers.py``): only those layers run forward and backward, and the stream below them is
computed once. The copy leaves the served model untouched (reason mode and the zero-shot space read its
own layers).

The rows are right-padded with per-row lengths, as the runner pads them; they are far shorter than the
sliding window, so one causal mask over each row's real tokens serves every layer type.

Tuned weights ship with the heads (``TunedWeights``: ``heads/tuned_layers.safetensors``, float16), not
with the backbone: they are part of the prompt head, fitted by ``guard.layer_tuning``. They are stored whole unless
asked otherwise (``fit_heads --tuned-rank``): then each weight matrix is stored as its change from the served layer
cut to a low rank by SVD (``TunedWeights.low_rank``; the change is nearly low-rank, as LoRA assumes: rank 128 takes
10 MB instead of 33 for validation AP 95.3 against 95.4, but cost the shipped guard 4 points of held-out OpenAI
Moderation F1, docs/guard.md). The served decoder is at hand wherever the copy is built, so it adds the change back.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

TUNED_FILE = "tuned_layers.safetensors"
# A low-rank matrix ``name`` is stored as ``name + DELTA_LEFT`` (out x r, the singular values folded in) and
# ``name + DELTA_RIGHT`` (r x in): the tuned matrix is the served one plus their product.
DELTA_LEFT, DELTA_RIGHT = ".delta_left", ".delta_right"


class TunedLayers(nn.Module):
    """A trainable copy of ``decoder.layers[cut:top]`` (a Hugging Face Gemma 3 text decoder)."""

    def __init__(self, decoder: Any, cut: int, top: int) -> None:
        super().__init__()
        if not 0 < cut < top <= len(decoder.layers):
            raise ValueError(f"layers {cut}..{top - 1}: the decoder has {len(decoder.layers)} layers")
        self.cut, self.top = cut, top
        self.layers = nn.ModuleList(copy.deepcopy(decoder.layers[cut:top]))
        # Held outside the module tree, so ``.to()``, ``.float()`` and the state dict leave the served decoder's
        # rotary tables alone (they stay float32 under a bfloat16 model).
        self._rotary = (decoder.rotary_emb,)
        self.types = list(decoder.config.layer_types[cut:top])
        self.requires_grad_(True)  # the served model's weights come frozen

    def forward(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, hidden) residuals after layer ``cut`` of right-padded rows -> the residuals after ``top - 1``."""
        batch, width, _ = states.shape
        positions = torch.arange(width, device=states.device)[None].expand(batch, width)
        rope = {kind: self._rotary[0](states, positions, kind) for kind in set(self.types)}
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


@dataclass
class TunedWeights:
    """The tuned copy's weights as stored with the heads: ``state`` maps its parameter names to float16 arrays,
    whole, or for a low-rank matrix its change from the served layer as two factors (``DELTA_LEFT``/``DELTA_RIGHT``)."""

    cut: int
    top: int
    state: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, layers: TunedLayers, info: dict[str, Any] | None = None) -> TunedWeights:
        state = {name: tensor.detach().to("cpu", torch.float16).numpy() for name, tensor in layers.state_dict().items()
                 if name.startswith("layers.")}  # the rotary tables are the decoder's own
        return cls(layers.cut, layers.top, state, dict(info or {}))

    @property
    def rank(self) -> int | None:
        """The rank the matrices' changes are cut to (None: stored whole)."""
        ranks = {array.shape[1] for name, array in self.state.items() if name.endswith(DELTA_LEFT)}
        return max(ranks) if ranks else None

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.state.values())

    def low_rank(self, decoder: Any, rank: int) -> TunedWeights:
        """These weights with every matrix stored as its change from ``decoder``'s layer cut to its top ``rank``
        singular directions (vectors, such as the norms' scales, stay whole)."""
        served = _served_state(decoder, self.cut, self.top)
        state: dict[str, np.ndarray] = {}
        for name, tuned in self._dense(served).items():
            if tuned.ndim != 2 or rank >= min(tuned.shape):
                state[name] = tuned.astype(np.float16)
                continue
            change = torch.from_numpy(tuned.astype(np.float32)) - served[name]
            left, values, right = torch.linalg.svd(change, full_matrices=False)
            state[name + DELTA_LEFT] = (left[:, :rank] * values[:rank]).numpy().astype(np.float16)
            state[name + DELTA_RIGHT] = right[:rank].numpy().astype(np.float16)
        return TunedWeights(self.cut, self.top, state, {**self.info, "rank": rank})

    def dense(self, decoder: Any) -> dict[str, np.ndarray]:
        """Every parameter whole (float32 where a low-rank change was added to ``decoder``'s layer)."""
        return self._dense(_served_state(decoder, self.cut, self.top) if self.rank is not None else {})

    def _dense(self, served: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, array in self.state.items():
            if name.endswith(DELTA_RIGHT):
                continue
            if name.endswith(DELTA_LEFT):
                base = name.removesuffix(DELTA_LEFT)
                if base not in served:
                    raise ValueError(f"tuned layers {self.cut}..{self.top - 1} do not fit this decoder: {base}")
                change = torch.from_numpy(array.astype(np.float32)) @ torch.from_numpy(self.state[base + DELTA_RIGHT].astype(np.float32))
                if change.shape != served[base].shape:
                    raise ValueError(f"tuned layers {self.cut}..{self.top - 1} do not fit this decoder: {base} {tuple(change.shape)}")
                out[base] = (served[base] + change).numpy()
            else:
                out[name] = array
        return out

    @property
    def digest(self) -> str:
        """Identifies the weights (the feature cache of their block is keyed by it)."""
        digest = hashlib.sha256(f"{self.cut}-{self.top}".encode())
        for name in sorted(self.state):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(self.state[name]).tobytes())
        return digest.hexdigest()[:24]

    def module(self, decoder: Any, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TunedLayers:
        """A frozen ``TunedLayers`` over ``decoder`` carrying these weights, ready to serve."""
        layers = TunedLayers(decoder, self.cut, self.top)
        missing, unexpected = layers.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in self.dense(decoder).items()},
                                                     strict=False)
        wrong = [k for k in missing if k.startswith("layers.")] + list(unexpected)
        if wrong:
            raise ValueError(f"tuned layers {self.cut}..{self.top - 1} do not fit this decoder: {wrong[:3]}")
        return layers.to(device=device, dtype=dtype).eval().requires_grad_(False)

    def save(self, directory: Path) -> dict[str, Any]:
        """Writes the weights into ``directory``; returns what the heads' metadata records of them."""
        from safetensors.numpy import save_file

        # C order: safetensors writes an array's buffer as it lies (SVD factors come transposed), and the digest reads C order.
        save_file({name: np.ascontiguousarray(array) for name, array in self.state.items()}, str(Path(directory) / TUNED_FILE))
        return {"cut": self.cut, "top": self.top, "file": TUNED_FILE, "digest": self.digest, "info": self.info}

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any]) -> TunedWeights:
        from safetensors.numpy import load_file

        weights = cls(int(meta["cut"]), int(meta["top"]), load_file(str(Path(directory) / meta.get("file", TUNED_FILE))),
                      dict(meta.get("info", {})))
        if meta.get("digest") and weights.digest != meta["digest"]:
            raise ValueError(f"{meta.get('file', TUNED_FILE)} in {directory} is not the file the heads were fitted with")
        return weights


def _served_state(decoder: Any, cut: int, top: int) -> dict[str, torch.Tensor]:
    """The served layers ``cut``..``top - 1`` of ``decoder`` in float32 on the CPU, named as ``TunedLayers`` names them."""
    if not 0 < cut < top <= len(decoder.layers):
        raise ValueError(f"tuned layers {cut}..{top - 1} do not fit this decoder: it has {len(decoder.layers)} layers")
    return {f"layers.{index}.{name}": parameter.detach().to("cpu", torch.float32)
            for index, layer in enumerate(decoder.layers[cut:top]) for name, parameter in layer.named_parameters()}
