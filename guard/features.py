"""Hidden-state features of the guard's backbone: what the latent heads (``guard.heads``) read.

A text's feature is its tokens' hidden states, mean-pooled, at a few layers of the
backbone (the served weights: the base with any LoRA adapter merged), taken from a
plain conversation with no policy in it, so one feature serves every policy and a refit
never recomputes a text it has seen::

    <bos>User: {prompt}\\n\\nAssistant: {response}
          └── prompt ──┘              └── response ──┘

One forward over that conversation gives both vectors: the prompt's tokens (pooled alone;
causal attention makes them identical to a prompt-only pass) and the response's tokens,
read with the prompt in context. Why these choices (measured in the issue's experiment on
the untrained base): mean pooling beat the last token at every layer, and middle layers
did as well as the top. The last block is the similarity layer that zero-shot categories
and example heads read (a text against a category's name and description): the residual
stream after layer 16 of 18, not the final-normed output. On the custom-category pool and
the policy-following pairs it separated categories far better (pairs 78% vs 58% with the
same calibration; the layer sweep is in the closing note of issue 20). The forward stops
there: the last two layers and the LM head are never computed.

Vectors are cached on disk (SQLite, one file per backbone fingerprint, keyed by the
text's sha256), written after every batch, so an interrupted extraction resumes where
it stopped and a refit only computes new texts.

Heads whose prompt head was tuned (``guard.layer_tuning``) add one block: their tuned copy
of layers 12-14 runs on the stream the forward already captured after layer 12, and the
prompt's mean over its output is appended. That block is cached apart (keyed by the tuned
weights' digest too), so tuning again never invalidates the served weights' own blocks.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from guard.backends.gemma_runner import RowCache
from guard.residuals import length_batches, padded
from guard.tuned_layers import TunedLayers

# Depths tapped, as fractions of the decoder (the residual stream after that many layers:
# 8, 12 and 15 of Gemma 3 270M's 18), then the final-normed output.
TAP_FRACTIONS = (8 / 18, 12 / 18, 15 / 18)
SIMILARITY_FRACTION = 16 / 18
PROMPT_TOKENS = 192  # a longer text keeps its head and tail (both matter for moderation)
RESPONSE_TOKENS = 192
FEATURE_VERSION = "conv-mean-v3"
USER_MARK = "User: "
ASSISTANT_MARK = "\n\nAssistant: "

ProgressCallback = Callable[[int, int], None]


def tap_layers(num_layers: int) -> tuple[int, ...]:
    return tuple(sorted({min(num_layers, max(1, round(num_layers * f))) for f in TAP_FRACTIONS}))


def similarity_layer(num_layers: int) -> int:
    return min(num_layers, max(1, round(num_layers * SIMILARITY_FRACTION)))


def layout_for(hidden: int, num_layers: int) -> FeatureLayout:
    return FeatureLayout(hidden=hidden, layers=tap_layers(num_layers), similarity_layer=similarity_layer(num_layers))


@dataclass(frozen=True)
class FeatureLayout:
    """Where each pooled layer sits in a feature vector (blocks of ``hidden`` floats): the taps, the
    similarity layer, then, where the heads carry tuned layers (``guard.tuned_layers``), the prompt's mean
    over the output of that tuned copy of layers ``tuned[0]`` to ``tuned[1] - 1``."""

    hidden: int
    layers: tuple[int, ...] = (8, 12, 15)
    similarity_layer: int = 16
    version: str = FEATURE_VERSION
    tuned: tuple[int, int] | None = None

    @property
    def frozen_blocks(self) -> int:
        """The blocks of the served weights' own states (cached per backbone fingerprint)."""
        return len(self.layers) + 1  # the taps, then the similarity layer

    @property
    def blocks(self) -> int:
        return self.frozen_blocks + (1 if self.tuned else 0)

    @property
    def captured(self) -> tuple[int, ...]:
        """The decoder layers one forward must capture (each once), in order."""
        return tuple(sorted({*self.layers, self.similarity_layer, *((self.tuned[0],) if self.tuned else ())}))

    @property
    def width(self) -> int:
        return self.blocks * self.hidden

    @property
    def frozen_width(self) -> int:
        return self.frozen_blocks * self.hidden

    def block(self, vectors: np.ndarray, index: int) -> np.ndarray:
        """Block ``index`` of each row."""
        return vectors[..., index * self.hidden : (index + 1) * self.hidden]

    def taps(self, vectors: np.ndarray) -> np.ndarray:
        """The tapped middle layers, concatenated (what the task heads read)."""
        return vectors[..., : len(self.layers) * self.hidden]

    def similarity(self, vectors: np.ndarray) -> np.ndarray:
        """The similarity layer's block (what zero-shot categories and example heads read)."""
        return self.block(vectors, len(self.layers))

    def tuned_block(self, vectors: np.ndarray) -> np.ndarray:
        """The tuned layers' block (what a prompt head fitted with them reads)."""
        if not self.tuned:
            raise ValueError("these features have no tuned layers")
        return self.block(vectors, self.frozen_blocks)

    def with_tuned(self, tuned: tuple[int, int] | None) -> FeatureLayout:
        return replace(self, tuned=tuned)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"hidden": self.hidden, "layers": list(self.layers), "similarity_layer": self.similarity_layer,
                                "version": self.version}
        if self.tuned:
            data["tuned"] = list(self.tuned)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureLayout:
        tuned = data.get("tuned")
        return cls(hidden=int(data["hidden"]), layers=tuple(data["layers"]),
                   similarity_layer=int(data.get("similarity_layer", 0)), version=data["version"],
                   tuned=(int(tuned[0]), int(tuned[1])) if tuned else None)


# --------------------------------------------------------------------------- fingerprints


def _file_digest(path: Path, whole: bool) -> str:
    """sha256 of a file; of a big base model's size + first and last MiB (seconds saved on
    every load; a different base differs there too)."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as handle:
        if whole or size <= 4 << 20:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        else:
            digest.update(handle.read(1 << 20))
            handle.seek(size - (1 << 20))
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()


def _directory_digest(directory: Path, patterns: Sequence[str], whole: bool) -> str:
    digest = hashlib.sha256()
    for pattern in patterns:
        for path in sorted(directory.glob(pattern)):
            digest.update(path.name.encode())
            digest.update(_file_digest(path, whole).encode())
    return digest.hexdigest()


def backbone_fingerprint(base_path: str | Path, adapter_path: str | Path | None, layout_version: str = FEATURE_VERSION) -> str:
    """Identifies the weights hidden states come from: base weights, adapter weights, feature recipe.

    Heads store it; heads fitted for another backbone are refused (``guard.heads``)."""
    digest = hashlib.sha256(layout_version.encode())
    digest.update(_directory_digest(Path(base_path), ("config.json", "*.safetensors", "*.bin"), whole=False).encode())
    if adapter_path:
        digest.update(_directory_digest(Path(adapter_path), ("adapter_config.json", "adapter_model.*"), whole=True).encode())
    return digest.hexdigest()[:24]


def text_key(prompt: str, response: str | None = None) -> str:
    """Cache key of a prompt's vector (``response`` None) or of a response's vector in its conversation."""
    if response is None:
        return hashlib.sha256(("p\0" + prompt).encode()).hexdigest()
    return hashlib.sha256(("r\0" + prompt + "\0" + response).encode()).hexdigest()


# --------------------------------------------------------------------------- cache


class FeatureStore:
    """Pooled vectors of one backbone on disk (float16 blobs in SQLite; safe across processes)."""

    def __init__(self, path: Path, width: int) -> None:
        self.path = path
        self.width = width
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, data BLOB NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):
                part = unique[start : start + 500]
                marks = ",".join("?" * len(part))
                for key, blob in self._db.execute(f"SELECT key, data FROM vectors WHERE key IN ({marks})", part):
                    vector = np.frombuffer(blob, dtype=np.float16)
                    if vector.shape[0] == self.width:
                        found[key] = vector.astype(np.float32)
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        rows = [(key, np.asarray(vector, dtype=np.float16).tobytes()) for key, vector in items.items()]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO vectors (key, data) VALUES (?, ?)", rows)
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def default_cache_dir() -> Path:
    try:
        from django.conf import settings

        if settings.configured and getattr(settings, "GUARD_FEATURE_CACHE", ""):
            return Path(settings.GUARD_FEATURE_CACHE)
        if settings.configured:
            return Path(settings.GUARD_MODEL_CACHE).parent / "features"
    except Exception:  # noqa: BLE001 - usable without Django
        pass
    return Path.home() / ".cache" / "guardsite" / "features"


# --------------------------------------------------------------------------- extraction


@dataclass
class ConversationRow:
    ids: list[int]
    prompt_span: tuple[int, int]
    response_span: tuple[int, int] | None
    prompt_key: str
    response_key: str | None
    prompt_clipped: bool = False  # the prompt's middle left out (``PROMPT_TOKENS``)


def _blank_responses_as_none(pairs: Sequence[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """A response of only whitespace is no response (no response row, no response vector)."""
    return [(prompt, response if response and response.strip() else None) for prompt, response in pairs]


def _clip(ids: list[int], limit: int) -> list[int]:
    if len(ids) <= limit:
        return ids
    half = limit // 2
    return ids[:half] + ids[-(limit - half) :]


class FeatureExtractor:
    """Pooled hidden states of conversations, through the backend's lean Gemma runner.

    ``runner``: a ``GemmaRunner`` over the served weights; ``tokenizer``: its tokenizer.
    ``store``: the cache of the served weights' blocks (None: compute everything, keep nothing).
    ``tuned``: the heads' tuned copy of a few layers (``guard.tuned_layers``): the prompt's mean over its
    output is one more block, cached in ``tuned_store`` (keyed by the tuned weights too).
    """

    def __init__(
        self,
        runner: Any,
        tokenizer: Any,
        *,
        store: FeatureStore | None = None,
        tuned: TunedLayers | None = None,
        tuned_store: FeatureStore | None = None,
        max_batch_tokens: int = 4096,
        max_batch_size: int = 64,
    ) -> None:
        self.runner = runner
        self.tokenizer = tokenizer
        layout = layout_for(int(runner.hidden_size), int(runner.num_layers))
        self.layout = layout.with_tuned((tuned.cut, tuned.top) if tuned is not None else None)
        self.store = store
        self.tuned = tuned
        self.tuned_store = tuned_store if tuned is not None else None
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.bos = [tokenizer.bos_token_id] if getattr(tokenizer, "bos_token_id", None) is not None else []
        self._user = tokenizer.encode(USER_MARK, add_special_tokens=False)
        self._assistant = tokenizer.encode(ASSISTANT_MARK, add_special_tokens=False)
        self.tokens_computed = 0
        self.seconds_computing = 0.0

    def rows(self, pairs: Sequence[tuple[str, str | None]]) -> list[ConversationRow]:
        """The token row of each ``(prompt, response or None)`` as the features see it (``<bos>``, ``USER_MARK``,
        the prompt, then ``ASSISTANT_MARK`` and the response; each side clipped), with the spans that are pooled."""
        prompts = [prompt for prompt, _ in pairs]
        responses = [response for _, response in pairs if response]
        encoded_prompts = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        encoded_responses = iter(self.tokenizer(responses, add_special_tokens=False)["input_ids"]) if responses else iter(())
        rows = []
        for (prompt, response), whole in zip(pairs, encoded_prompts, strict=True):
            prompt_ids = _clip(list(whole) or [self.tokenizer.eos_token_id or 0], PROMPT_TOKENS)
            start = len(self.bos) + len(self._user)
            ids = self.bos + self._user + prompt_ids
            prompt_span = (start, start + len(prompt_ids))
            response_span = None
            if response:
                response_ids = _clip(list(next(encoded_responses)) or [0], RESPONSE_TOKENS)
                ids = ids + self._assistant
                response_span = (len(ids), len(ids) + len(response_ids))
                ids = ids + response_ids
            rows.append(ConversationRow(ids, prompt_span, response_span, text_key(prompt),
                                        text_key(prompt, response) if response else None, len(whole) > PROMPT_TOKENS))
        return rows

    def clipped(self, pairs: Sequence[tuple[str, str | None]]) -> list[bool]:
        """Whether each ``(prompt, response or None)`` is longer than the features read (``PROMPT_TOKENS``,
        ``RESPONSE_TOKENS``: the first and last tokens of a longer text): a verdict on it is ``truncated``."""
        pairs = _blank_responses_as_none(pairs)
        texts = [text for pair in pairs for text in pair if text]
        lengths = iter(len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else iter(())
        out = []
        for prompt, response in pairs:
            cut = next(lengths) > PROMPT_TOKENS if prompt else False
            if response:
                cut = next(lengths) > RESPONSE_TOKENS or cut
            out.append(cut)
        return out

    @torch.inference_mode()
    def _forward(self, rows: list[ConversationRow], prompt_states: dict[str, np.ndarray] | None = None
                 ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Each row's prompt and response vectors (the response's without the tuned block); with ``prompt_states``,
        the tuned copy's output at every token of each prompt read whole (not clipped) is put there too."""
        runner = self.runner
        ids, lengths = padded(runner, [row.ids for row in rows], self.tokenizer.pad_token_id or 0)
        width = ids.shape[1]
        cache = RowCache(runner, len(rows), width, None)
        captured: list[torch.Tensor] = []
        layout = self.layout
        runner.forward(cache, ids, lengths, capture=layout.captured, captured=captured, stop_after=max(layout.captured))
        by_layer = dict(zip(layout.captured, captured, strict=True))
        blocks = [by_layer[layer].float() for layer in (*layout.layers, layout.similarity_layer)]
        # One (B, 2, T) weight matrix pools both spans of every row in one product.
        weights = torch.zeros((len(rows), 2, width), dtype=torch.float32, device=runner.device)
        for r, row in enumerate(rows):
            a, b = row.prompt_span
            weights[r, 0, a:b] = 1.0 / (b - a)
            if row.response_span is not None:
                a, b = row.response_span
                weights[r, 1, a:b] = 1.0 / (b - a)
        pooled = torch.einsum("bst,lbth->bslh", weights, torch.stack(blocks, dim=0)).reshape(len(rows), 2, -1)
        prompt = pooled[:, 0]
        if self.tuned is not None:
            # The tuned copy reads the served layers' stream where it was cut; causal attention keeps the
            # prompt's states free of the response, so they match a prompt-only row (how it was tuned).
            parameter = next(self.tuned.parameters())
            states = self.tuned(by_layer[self.tuned.cut].to(parameter.dtype), lengths.to(parameter.device)).float()
            prompt = torch.cat([prompt, torch.einsum("bt,bth->bh", weights[:, 0], states)], dim=1)
            if prompt_states is not None:
                # The peak reader's states of a prompt short enough to be read whole here (``guard.peak_reading``).
                for r, row in enumerate(rows):
                    a, b = row.prompt_span
                    if not row.prompt_clipped:
                        prompt_states[row.prompt_key] = states[r, a:b].cpu().numpy()
        prompt_np, response_np = prompt.cpu().numpy(), pooled[:, 1].cpu().numpy()
        self.tokens_computed += int(lengths.sum())
        return [(prompt_np[r], response_np[r] if row.response_span else None) for r, row in enumerate(rows)]

    def encode(
        self, pairs: Sequence[tuple[str, str | None]], progress: ProgressCallback | None = None, *,
        prompt_states: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Prompt and response vectors of each ``(prompt, response or None)``: two (n, width)
        float32 arrays; a response row is NaN where there is no response. A response row's tuned
        block (where there is one) is its prompt's: tuned layers read prompts.

        ``prompt_states`` (with tuned layers): filled, by ``text_key(prompt)``, with the tuned copy's (tokens,
        hidden) float32 output over each prompt this call computed and read whole, the states the peak reader
        needs, so a prompt the features read whole is not read twice. Cached prompts are not computed, so
        they are missing from it."""
        width, frozen_width = self.layout.width, self.layout.frozen_width
        prompt_out = np.zeros((len(pairs), width), dtype=np.float32)
        response_out = np.full((len(pairs), width), np.nan, dtype=np.float32)
        if not pairs:
            return prompt_out, response_out
        pairs = _blank_responses_as_none(pairs)
        keys = [text_key(p) for p, _ in pairs] + [text_key(p, r) for p, r in pairs if r]
        cached = self.store.get_many(keys) if self.store is not None else {}
        tuned_cached: dict[str, np.ndarray] = {}
        if self.tuned_store is not None:
            tuned_cached = self.tuned_store.get_many([text_key(p) for p, _ in pairs])

        def missing(prompt: str, response: str | None) -> bool:
            key = text_key(prompt)
            return (key not in cached or (response is not None and text_key(prompt, response) not in cached)
                    or (self.tuned is not None and key not in tuned_cached))

        # One row per distinct conversation still missing.
        unique: dict[tuple[str, str | None], int] = {}
        for pair in pairs:
            if missing(*pair):
                unique.setdefault(pair, len(unique))
        rows = self.rows(list(unique)) if unique else []
        done = 0
        if progress:
            progress(0, len(rows))
        for batch in length_batches([len(row.ids) for row in rows], self.max_batch_tokens, self.max_batch_size):
            started = time.perf_counter()
            results = self._forward([rows[i] for i in batch], prompt_states)
            self.seconds_computing += time.perf_counter() - started
            fresh: dict[str, np.ndarray] = {}
            fresh_tuned: dict[str, np.ndarray] = {}
            for i, (prompt_vec, response_vec) in zip(batch, results, strict=True):
                fresh[rows[i].prompt_key] = prompt_vec[:frozen_width]
                if self.tuned is not None:
                    fresh_tuned[rows[i].prompt_key] = prompt_vec[frozen_width:]
                if rows[i].response_key and response_vec is not None:
                    fresh[rows[i].response_key] = response_vec
            if self.store is not None:
                self.store.put_many(fresh)
            if self.tuned_store is not None:
                self.tuned_store.put_many(fresh_tuned)
            # Rounded as the cache stores them, so a vector reads the same computed or cached.
            cached.update({k: v.astype(np.float16).astype(np.float32) for k, v in fresh.items()})
            tuned_cached.update({k: v.astype(np.float16).astype(np.float32) for k, v in fresh_tuned.items()})
            done += len(batch)
            if progress:
                progress(done, len(rows))
        for i, (prompt, response) in enumerate(pairs):
            key = text_key(prompt)
            prompt_out[i, :frozen_width] = cached[key]
            if self.tuned is not None:
                prompt_out[i, frozen_width:] = tuned_cached[key]
            if response is not None:
                response_out[i, :frozen_width] = cached[text_key(prompt, response)]
                response_out[i, frozen_width:] = prompt_out[i, frozen_width:]
        return prompt_out, response_out

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_computed / self.seconds_computing if self.seconds_computing else 0.0


def extractor_for(
    backend: Any, cache_dir: Path | None = None, *, cached: bool = True, tuned: TunedLayers | None = None, tuned_digest: str = ""
) -> FeatureExtractor:
    """A feature extractor over a loaded ``TransformersBackend``, caching by its fingerprint; with ``tuned``
    (the heads' tuned layers, ``tuned_digest`` their weights' digest), their block is cached beside, keyed by both."""
    fingerprint = backend.feature_fingerprint
    store = tuned_store = None
    layout = layout_for(int(backend.runner.hidden_size), int(backend.runner.num_layers))
    if cached:
        directory = cache_dir or default_cache_dir()
        store = FeatureStore(directory / f"{fingerprint}.sqlite3", layout.frozen_width)
        if tuned is not None:
            tuned_store = FeatureStore(directory / f"{fingerprint}-tuned-{tuned_digest[:16]}.sqlite3", layout.hidden)
    on_cuda = str(getattr(backend.runner, "device", "cpu")).startswith("cuda")
    return FeatureExtractor(
        backend.runner,
        backend.tokenizer,
        store=store,
        tuned=tuned,
        tuned_store=tuned_store,
        max_batch_tokens=65536 if on_cuda else 4096,
        max_batch_size=256 if on_cuda else 64,
    )
