"""A lean batched forward of Gemma 3 text decoders, for guard scoring and decoding.

Why not ``model(...)``: a transformers forward costs about 1,900 dispatch-level
operations of host time whatever the batch holds (mask building, cache
bookkeeping, per-layer Python), and its cache concatenates the whole KV at
every step. The guard runs a handful of short forwards per batch (the label
steps, the category tree, one per explanation token), so that overhead, not
arithmetic, capped throughput. This module runs the same arithmetic over the
model's own weights (nothing is copied but the fused q/k/v and gate/up
matrices) with:

* **one shared policy prefix** per batch: its keys and values are computed
  once (batch of one) and attended by every row without being copied per row;
* **right-padded rows with per-row lengths**: a row's real tokens come first,
  so the prefill needs only a causal (and sliding-window) mask of shape
  ``(T, P + T)`` shared by all rows, never a ``(batch, T, T)`` one;
* **a static KV store** per batch, written in place (no concatenation per
  step), with each slot's position and validity, so later chunks may skip
  padding holes and a chunk may be a tree (category candidates);
* **no host syncs**: every shape is known on the host; values stay on the device.

Prefill chunks use ``scaled_dot_product_attention`` over ``[prefix; chunk]``;
short chunks (label steps, the category tree, decoding) use a two-part
attention whose prefix half is one matrix product against the shared prefix.
The result equals the transformers forward within float rounding (the tests
compare against a plain ``model(...)``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Chunks at most this long attend with the two-part (shared prefix) attention;
# longer ones with SDPA over the concatenated keys (the copy of the prefix is
# then shared by enough queries to be cheaper than materialising the scores).
SHORT_CHUNK = 16
# Vocabulary rows per LM-head chunk of a greedy pick on the CPU (8,192 x 640 float32 = 21 MB of weight, a
# 64-row chunk of logits 2 MB: it stays in L2 for the max). Measured 2,048-32,768: 8,192 was fastest.
GREEDY_CHUNK_CPU = 8192


class UnsupportedModel(Exception):
    """The model is not a Gemma 3 text decoder."""


@dataclass
class _Layer:
    qkv: torch.Tensor  # (q + 2 kv) * head_dim, hidden
    o: torch.Tensor
    gate_up: torch.Tensor  # 2 * intermediate, hidden
    down: torch.Tensor
    input_norm: torch.Tensor  # 1 + weight, float32
    post_attention_norm: torch.Tensor
    pre_feedforward_norm: torch.Tensor
    post_feedforward_norm: torch.Tensor
    q_norm: torch.Tensor
    k_norm: torch.Tensor
    sliding: bool
    layer_type: str


@dataclass
class Prefix:
    """Keys and values of a token prefix shared by every row of a batch."""

    keys: torch.Tensor  # (layers, kv_heads, P, head_dim)
    values: torch.Tensor
    length: int


class RowCache:
    """The KV store of one batch: each row's own slots after the shared prefix.

    Slot ``s`` of row ``r`` holds a key at position ``slot_pos[r, s]``; only
    slots with ``slot_ok`` are ever attended (padding and cropped tree nodes
    are not). ``next_pos`` is each row's next position.
    """

    def __init__(self, runner: GemmaRunner, batch: int, capacity: int, prefix: Prefix | None) -> None:
        self.runner = runner
        self.prefix = prefix
        self.batch = batch
        device = runner.device
        shape = (runner.num_layers, batch, runner.kv_heads, max(1, capacity), runner.head_dim)
        # Zeros, not empty: unused slots are masked out of the scores, but their values
        # are still multiplied by a zero weight, and 0 * NaN garbage would be NaN.
        self.keys = torch.zeros(shape, dtype=runner.dtype, device=device)
        self.values = torch.zeros(shape, dtype=runner.dtype, device=device)
        self.slot_pos = torch.zeros((batch, max(1, capacity)), dtype=torch.long, device=device)
        self.slot_ok = torch.zeros((batch, max(1, capacity)), dtype=torch.bool, device=device)
        start = prefix.length if prefix is not None else 0
        self.next_pos = torch.full((batch,), start, dtype=torch.long, device=device)
        self.length = 0

    def rows(self, first: int, last: int) -> RowCache:
        """A view of rows ``first:last`` sharing this cache's storage (for a prefill
        in length buckets); copy its ``next_pos`` back after feeding it."""
        view = RowCache.__new__(RowCache)
        view.runner, view.prefix, view.batch = self.runner, self.prefix, last - first
        view.keys, view.values = self.keys[:, first:last], self.values[:, first:last]
        view.slot_pos, view.slot_ok = self.slot_pos[first:last], self.slot_ok[first:last]
        view.next_pos, view.length = self.next_pos[first:last], self.length
        return view

    @property
    def capacity(self) -> int:
        return int(self.keys.shape[3])

    def ensure(self, more: int) -> None:
        """Room for ``more`` slots (grows by doubling; the used slots are copied once)."""
        need = self.length + more
        if need <= self.capacity:
            return
        size = max(need, 2 * self.capacity)
        grow = size - self.capacity
        pad = (0, 0, 0, grow)
        self.keys = F.pad(self.keys, pad)
        self.values = F.pad(self.values, pad)
        self.slot_pos = F.pad(self.slot_pos, (0, grow))
        self.slot_ok = F.pad(self.slot_ok, (0, grow))

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (indices on the device), e.g. unfinished decodes."""
        used = self.length
        for name in ("keys", "values"):
            old = getattr(self, name)
            kept = old.new_zeros((old.shape[0], rows.shape[0], *old.shape[2:]))
            kept[:, :, :, :used] = old[:, rows, :, :used]
            setattr(self, name, kept)
        self.slot_pos = self.slot_pos[rows]
        self.slot_ok = self.slot_ok[rows]
        self.next_pos = self.next_pos[rows]
        self.batch = int(rows.shape[0])


class GemmaRunner:
    """Batched forward over a loaded ``Gemma3ForCausalLM`` (merged adapters included)."""

    def __init__(self, model: torch.nn.Module) -> None:
        decoder = model.get_decoder()
        config = model.config
        config = getattr(config, "text_config", None) or config
        layers = getattr(decoder, "layers", None)
        rotary = getattr(decoder, "rotary_emb", None)
        if layers is None or rotary is None or not all(hasattr(layer.self_attn, "q_norm") for layer in layers):
            raise UnsupportedModel(f"{type(model).__name__} is not a Gemma 3 text decoder")
        embed = decoder.embed_tokens
        self.device = embed.weight.device
        self.dtype = embed.weight.dtype
        self.embedding = embed.weight
        scale = getattr(embed, "embed_scale", None)
        self.embed_scale = (
            scale.to(self.dtype) if isinstance(scale, torch.Tensor) else torch.tensor(config.hidden_size**0.5, dtype=self.dtype)
        ).to(self.device)
        self.hidden_size = int(config.hidden_size)
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
        self.groups = self.heads // self.kv_heads
        self.scaling = float(config.query_pre_attn_scalar) ** -0.5
        self.eps = float(config.rms_norm_eps)
        self.softcap_attention = getattr(config, "attn_logit_softcapping", None)
        self.softcap_final = getattr(config, "final_logit_softcapping", None)
        self.sliding_window = getattr(config, "sliding_window", None)
        activation = getattr(config, "hidden_activation", "gelu_pytorch_tanh")
        self.gelu_approximate = "tanh" if "tanh" in str(activation) else "none"
        layer_types = list(getattr(config, "layer_types", None) or ["full_attention"] * len(layers))
        self.rope: dict[str, tuple[torch.Tensor, float]] = {}
        for layer_type in set(layer_types):
            inv_freq = getattr(rotary, f"{layer_type}_inv_freq")
            scaling = float(getattr(rotary, f"{layer_type}_attention_scaling", 1.0))
            self.rope[layer_type] = (inv_freq.float().to(self.device), scaling)
        self.layers: list[_Layer] = []
        with torch.no_grad():
            for layer, layer_type in zip(layers, layer_types, strict=True):
                attention, mlp = layer.self_attn, layer.mlp
                self.layers.append(
                    _Layer(
                        qkv=torch.cat([attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight]),
                        o=attention.o_proj.weight,
                        gate_up=torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]),
                        down=mlp.down_proj.weight,
                        input_norm=1.0 + layer.input_layernorm.weight.float(),
                        post_attention_norm=1.0 + layer.post_attention_layernorm.weight.float(),
                        pre_feedforward_norm=1.0 + layer.pre_feedforward_layernorm.weight.float(),
                        post_feedforward_norm=1.0 + layer.post_feedforward_layernorm.weight.float(),
                        q_norm=1.0 + attention.q_norm.weight.float(),
                        k_norm=1.0 + attention.k_norm.weight.float(),
                        sliding=layer_type == "sliding_attention" and bool(self.sliding_window),
                        layer_type=layer_type,
                    )
                )
            self.final_norm = 1.0 + decoder.norm.weight.float()
        self.lm_head = model.get_output_embeddings().weight
        if getattr(model.get_output_embeddings(), "bias", None) is not None:
            raise UnsupportedModel("an LM head with a bias is not a Gemma 3 head")
        self.num_layers = len(self.layers)
        self.intermediate = int(self.layers[0].down.shape[1])
        self.q_size = self.heads * self.head_dim
        self.kv_size = self.kv_heads * self.head_dim

    # ------------------------------------------------------------------ pieces

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # Gemma: normalise and scale in float32, then cast (transformers' Gemma3RMSNorm). One op
        # instead of six (a decode step runs 109 norms); bit-identical to the written-out formula.
        return F.rms_norm(x.float(), (x.shape[-1],), weight, self.eps).to(x.dtype)

    def _rope(self, positions: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """cos/sin per layer type for ``positions`` (B, T) -> each (B, T, 1, head_dim)."""
        out = {}
        for layer_type, (inv_freq, scaling) in self.rope.items():
            freqs = positions.float()[..., None] * inv_freq
            emb = torch.cat((freqs, freqs), dim=-1)
            cos = (emb.cos() * scaling).to(self.dtype)[:, :, None, :]
            sin = (emb.sin() * scaling).to(self.dtype)[:, :, None, :]
            out[layer_type] = (cos, sin)
        return out

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def logits(self, hidden: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Float32 LM-head logits of (final-normed) ``hidden`` for ``token_ids`` only (all when None)."""
        weight = self.lm_head if token_ids is None else self.lm_head[token_ids]
        logits = (hidden @ weight.T).float()
        if self.softcap_final:
            logits = torch.tanh(logits / self.softcap_final) * self.softcap_final
        return logits

    def greedy(self, hidden: torch.Tensor, banned: list[int] | None = None) -> torch.Tensor:
        """The argmax token of each row's logits (``banned`` ids never chosen), on the device.

        On a CPU the LM head is read in vocabulary chunks and each chunk's maximum taken while
        it is still in the cache: the full (batch x 262k) float32 logits would be written to
        memory and read back for the argmax, which costs as much as the product itself (1.9x
        faster at batch 64 on the overhead proxy). Ties go to the lowest id, as ``argmax``'s
        do. The final soft-cap (monotonic, absent from Gemma 3) cannot change the argmax, so
        the chunked path skips it. On an accelerator one product and one argmax are fewer
        kernel launches."""
        if banned or hidden.device.type != "cpu":
            logits = self.logits(hidden)
            if banned:
                logits[:, banned] = float("-inf")
            return torch.argmax(logits, dim=-1)
        vocab = self.lm_head.shape[0]
        maxima, positions = [], []
        for start in range(0, vocab, GREEDY_CHUNK_CPU):
            value, index = (hidden @ self.lm_head[start:start + GREEDY_CHUNK_CPU].T).float().max(dim=-1)
            maxima.append(value)
            positions.append(index + start)
        best = torch.stack(maxima, dim=1).argmax(dim=1, keepdim=True)  # the first chunk holding the maximum
        return torch.stack(positions, dim=1).gather(1, best)[:, 0]

    # ------------------------------------------------------------------ prefix

    def prefix(self, ids: list[int]) -> Prefix:
        """Keys and values of ``ids`` alone (one row), to be shared by a batch."""
        cache = RowCache(self, 1, len(ids), None)
        self.forward(cache, torch.tensor([ids], dtype=torch.long, device=self.device))
        n = len(ids)
        return Prefix(cache.keys[:, 0, :, :n].contiguous(), cache.values[:, 0, :, :n].contiguous(), n)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        cache: RowCache,
        ids: torch.Tensor,
        lengths: torch.Tensor | None = None,
        *,
        tree_depth: torch.Tensor | None = None,
        tree_visible: torch.Tensor | None = None,
        capture: Collection[int] = (),
        captured: list[torch.Tensor] | None = None,
        stop_after: int | None = None,
    ) -> torch.Tensor:
        """Feed one right-padded chunk ``ids`` (B, T) and return final-normed hidden
        states (B, T, hidden). Row ``r``'s real tokens are its first ``lengths[r]``
        (all when None).

        A tree chunk (``tree_depth`` (T,), ``tree_visible`` (T, T) or (B, T, T):
        which chunk nodes each node sees) sits at positions ``next_pos + depth``
        and is forgotten afterwards; a plain chunk is causal and is kept.

        ``capture``: layer counts (8 = the residual stream after the 8th decoder
        layer) whose hidden states are appended to ``captured``, in order, for the
        latent heads (``guard.features``); the final-normed states are returned as always.
        ``stop_after``: run only that many decoder layers (features that need no deeper layer;
        the cache is left unusable for further chunks, and the return value is not meaningful).
        """
        batch, width = ids.shape
        device = self.device
        cache.ensure(width)
        start = cache.length
        columns = torch.arange(width, device=device)
        valid = None if lengths is None else columns[None, :] < lengths[:, None]
        if tree_depth is None:
            positions = cache.next_pos[:, None] + columns[None, :]
            inner = torch.ones((width, width), dtype=torch.bool, device=device).tril()
        else:
            positions = cache.next_pos[:, None] + tree_depth[None, :]
            inner = tree_visible
        prefix = cache.prefix
        prefix_len = prefix.length if prefix is not None else 0
        use_sdpa = width > SHORT_CHUNK and self.softcap_attention is None

        if start == 0 and tree_depth is None:
            # Prefill: right padding keeps every real query away from padding keys, so
            # one (T, P + T) causal + window mask serves all rows (positions are equal).
            masks = self._prefill_masks(prefix_len, width)
        else:
            masks = self._chunk_masks(cache, positions, valid, inner, prefix_len, start, width)

        x = F.embedding(ids, self.embedding) * self.embed_scale
        rope = self._rope(positions)
        end = start + width
        for index, layer in enumerate(self.layers):
            residual = x
            h = self._norm(x, layer.input_norm)
            qkv = h @ layer.qkv.T
            q = qkv[..., : self.q_size].view(batch, width, self.heads, self.head_dim)
            k = qkv[..., self.q_size : self.q_size + self.kv_size].view(batch, width, self.kv_heads, self.head_dim)
            v = qkv[..., self.q_size + self.kv_size :].view(batch, width, self.kv_heads, self.head_dim)
            q = self._norm(q, layer.q_norm)
            k = self._norm(k, layer.k_norm)
            cos, sin = rope[layer.layer_type]
            q = self._rotate(q, cos, sin)
            k = self._rotate(k, cos, sin)
            cache.keys[index, :, :, start:end] = k.transpose(1, 2)
            cache.values[index, :, :, start:end] = v.transpose(1, 2)
            mask = masks["sliding" if layer.sliding else "full"]
            if use_sdpa:
                attended = self._sdpa(cache, index, q, prefix, end, mask)
            else:
                attended = self._two_part(cache, index, q, prefix, end, mask)
            h = attended @ layer.o.T
            x = residual + self._norm(h, layer.post_attention_norm)
            residual = x
            h = self._norm(x, layer.pre_feedforward_norm)
            gate, up = (h @ layer.gate_up.T).split(self.intermediate, dim=-1)
            h = (F.gelu(gate, approximate=self.gelu_approximate) * up) @ layer.down.T
            x = residual + self._norm(h, layer.post_feedforward_norm)
            if captured is not None and index + 1 in capture:
                captured.append(x)
            if stop_after is not None and index + 1 >= stop_after:
                return x

        if tree_depth is None:
            cache.slot_pos[:, start:end] = positions
            cache.slot_ok[:, start:end] = True if valid is None else valid
            cache.next_pos = cache.next_pos + (width if lengths is None else lengths)
            cache.length = end
        return self._norm(x, self.final_norm)

    # ------------------------------------------------------------------ attention

    def _prefill_masks(self, prefix_len: int, width: int) -> dict[str, torch.Tensor | None]:
        device = self.device
        q_pos = prefix_len + torch.arange(width, device=device)
        k_pos = torch.arange(prefix_len + width, device=device)
        visible = k_pos[None, :] <= q_pos[:, None]
        sliding = visible & (q_pos[:, None] - k_pos[None, :] < self.sliding_window) if self.sliding_window else visible
        return {"full": visible[None, None], "sliding": sliding[None, None]}  # (1, 1, T, P + T)

    def _chunk_masks(
        self,
        cache: RowCache,
        positions: torch.Tensor,
        valid: torch.Tensor | None,
        inner: torch.Tensor,
        prefix_len: int,
        start: int,
        width: int,
    ) -> dict[str, torch.Tensor | None]:
        """Visibility (B, 1, T, P + start + T) for the two-part attention."""
        batch = positions.shape[0]
        device = self.device
        old = cache.slot_ok[:, None, :start].expand(batch, width, start)
        new = inner if inner.dim() == 3 else inner[None].expand(batch, width, width)
        if valid is not None:
            new = new & valid[:, None, :]
        # A padding query sees itself at least: an all-masked row would give NaN.
        new = new | torch.eye(width, dtype=torch.bool, device=device)[None]
        rows = torch.cat([old, new], dim=2)
        prefix_part = torch.ones((batch, width, prefix_len), dtype=torch.bool, device=device)
        full = torch.cat([prefix_part, rows], dim=2)
        masks: dict[str, torch.Tensor | None] = {"full": full[:, None]}
        if self.sliding_window:
            key_pos = torch.cat(
                [torch.arange(prefix_len, device=device)[None].expand(batch, prefix_len), cache.slot_pos[:, :start], positions],
                dim=1,
            )
            near = positions[:, :, None] - key_pos[:, None, :] < self.sliding_window
            masks["sliding"] = (full & near)[:, None]
        else:
            masks["sliding"] = masks["full"]
        return masks

    def _sdpa(
        self, cache: RowCache, index: int, q: torch.Tensor, prefix: Prefix | None, end: int, mask: torch.Tensor | None
    ) -> torch.Tensor:
        batch, width = q.shape[:2]
        keys = cache.keys[index, :, :, :end]
        values = cache.values[index, :, :, :end]
        if prefix is not None:
            shape = (batch, self.kv_heads, prefix.length, self.head_dim)
            keys = torch.cat([prefix.keys[index][None].expand(shape), keys], dim=2)
            values = torch.cat([prefix.values[index][None].expand(shape), values], dim=2)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), keys, values, attn_mask=mask, scale=self.scaling, enable_gqa=self.groups > 1
        )
        return out.transpose(1, 2).reshape(batch, width, self.q_size)

    def _two_part(
        self, cache: RowCache, index: int, q: torch.Tensor, prefix: Prefix | None, end: int, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Attention over [shared prefix; row slots] without copying the prefix per row:
        queries are grouped per KV head, the prefix half is one matrix product."""
        batch, width = q.shape[:2]
        kvh, groups, dim = self.kv_heads, self.groups, self.head_dim
        # (B, T, kvH * G, D) -> (B, kvH, G * T, D); head h reads KV head h // G.
        grouped = q.view(batch, width, kvh, groups, dim).permute(0, 2, 3, 1, 4).reshape(batch, kvh, groups * width, dim)
        row_keys = cache.keys[index, :, :, :end]
        row_values = cache.values[index, :, :, :end]
        scores = grouped @ row_keys.transpose(-1, -2)
        prefix_len = prefix.length if prefix is not None else 0
        if prefix is not None:
            flat = grouped.transpose(0, 1).reshape(kvh, batch * groups * width, dim)
            prefix_scores = (flat @ prefix.keys[index].transpose(-1, -2)).view(kvh, batch, groups * width, prefix_len)
            scores = torch.cat([prefix_scores.transpose(0, 1), scores], dim=-1)
        scores = scores.float() * self.scaling
        if self.softcap_attention:
            scores = torch.tanh(scores / self.softcap_attention) * self.softcap_attention
        if mask is not None:
            scores = scores.view(batch, kvh, groups, width, -1).masked_fill(~mask[:, :, None], float("-inf"))
            scores = scores.view(batch, kvh, groups * width, -1)
        weights = torch.softmax(scores, dim=-1).to(q.dtype)
        out = weights[..., prefix_len:] @ row_values
        if prefix is not None:
            flat_weights = weights[..., :prefix_len].transpose(0, 1).reshape(kvh, batch * groups * width, prefix_len)
            out = out + (flat_weights @ prefix.values[index]).view(kvh, batch, groups * width, dim).transpose(0, 1)
        # (B, kvH, G * T, D) -> (B, T, kvH * G * D)
        return out.view(batch, kvh, groups, width, dim).permute(0, 3, 1, 2, 4).reshape(batch, width, self.q_size)
