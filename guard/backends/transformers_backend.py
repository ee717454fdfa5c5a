"""The transformers backend: the guard model in-process, on CPU or CUDA.

Both modes share one constrained scoring pass over the answer block of
``guard.contract`` (answer first: ``prompt/response/refusal/categories``, then
``explanation``), so fast and reason modes always agree on the labels.

How a batch is judged
=====================

1. **Prefill.** Every request is rendered with ``contract.render`` (the
   conversation text truncated by tokens so that the whole input fits
   ``GUARD_MAX_INPUT_TOKENS``), followed by the answer prefix ``"prompt:"``.
   Rows are LEFT-padded into one batch; attention masks and position ids are
   built explicitly (padding is never attended and never shifts positions),
   and only the hidden state of the last position goes through the LM head
   — and only for the few token ids we need, never the 262k vocabulary at
   every position.

2. **Label fields** (``LABEL_CHOICES``). The distribution of a field is the
   softmax of the logits of the *first token* of each choice (``" safe"``,
   ``" unsafe"``, ...), renormalised over the choices that are valid for the
   request (``response``/``refusal`` are ``safe|unsafe`` and
   ``refusal|compliance`` when there is an AI response, and forced to
   ``none`` — unscored — when there is none). This is exactly the
   distribution a constrained decoder samples from, divided by an optional
   calibration temperature. The field's label is the argmax, or, when the
   model is calibrated with a threshold for the field, the positive label
   (``unsafe``/``refusal``) as soon as its probability reaches the threshold
   (``guard.calibration``).
   Each following field is scored by one cached step: the chosen label of the
   previous field is teacher-forced, i.e. the text between the two field
   names (``" unsafe\\nresponse:"``, taken from ``contract.answer_prefix_before``)
   is appended to the KV cache of every row in one small forward, and the next
   field's distribution is read at its last position. A request without an AI
   response appends ``" <prompt label>\\nresponse: none\\nrefusal: none\\ncategories:"``
   at once.

3. **Categories.** Every policy code and ``none`` is a candidate continuation
   after ``"categories:"`` (``" S1"``, ``" S10"``, ``" none"``). The candidates'
   tokens form a trie that is fed as ONE extra chunk per row over the cached
   prefix, with a tree attention mask (a node sees the prefix and its
   ancestors only) and positions ``prefix + depth``; the chunk is cropped from
   the cache afterwards. A candidate's probability is the product, along its
   path, of the softmax restricted to the tokens allowed at each node (the
   children, plus the terminators ``","``/``"\\n"`` where a code may end), so
   ``S1`` and ``S10`` are told apart and the candidates' probabilities sum to
   1. Decision (multi-label): the codes whose probability reaches
   ``CATEGORY_THRESHOLD``; at least the most probable code when the verdict
   is unsafe; none when it is safe.

4. **Reason mode** continues the same cache with the chosen categories and
   ``"\\nexplanation:"``, then generates the explanation greedily (at most
   ``GUARD_MAX_NEW_TOKENS`` tokens, stopping at a newline or end of turn);
   the answer text is built with ``contract.format_answer`` and checked with
   ``contract.parse``. ``classify_batch(..., constrained=False)`` instead
   generates the whole answer freely and parses it: that is how training and
   evaluation measure a fine-tuned model's real parse failures.

Out of GPU memory, a batch is halved and retried (``run_in_halving_batches``).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from guard import contract
from guard.backends.base import GuardError, GuardRequest
from guard.calibration import choose_label
from guard.contract import NONE, SAFE, UNSAFE, PolicySpec, Verdict

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

# Room kept free in the input budget for the answer block that follows the input.
ANSWER_RESERVE_TOKENS = 48
# Tokens allowed for the label lines of a freely generated (unconstrained) answer.
LABEL_LINES_TOKENS = 48
CATEGORY_TERMINATORS = (",", "\n")
# Where the conversation starts in a rendered input (contract.render): everything
# before it depends only on the policy, so its KV is computed once and shared.
CONVERSATION_MARKER = "User prompt:"
PREFIX_CACHE_ENTRIES = 8
MIN_SHARED_PREFIX = 16
_ASCII_PROBE = [chr(i) for i in range(32, 127)] + ["\n", "\t"]
_NON_ASCII_PROBE = ["é", "ж", "中", "😀"]


def _setting(name: str, default: Any) -> Any:
    try:
        from django.conf import settings

        return getattr(settings, name, default) if settings.configured else default
    except Exception:  # noqa: BLE001 - usable without Django (bench scripts, notebooks)
        return default


# --------------------------------------------------------------------------- OOM


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


# --------------------------------------------------------------------------- KV state


class _KVState:
    """The KV cache of one batch, plus each cached key's position and validity.

    Masks and positions are explicit so that chunks can be padded per row
    (left) and so that a chunk can be a tree (category candidates).
    """

    def __init__(self, backend: TransformersBackend, batch: int) -> None:
        from transformers import DynamicCache

        self.backend = backend
        device = backend.device
        # No config: every layer keeps all its keys (the sliding window is applied by our mask).
        self.cache = DynamicCache()
        self.key_pos = torch.zeros((batch, 0), dtype=torch.long, device=device)
        self.key_ok = torch.zeros((batch, 0), dtype=torch.bool, device=device)
        self.next_pos = torch.zeros(batch, dtype=torch.long, device=device)
        self.batch = batch

    @property
    def length(self) -> int:
        return int(self.key_ok.shape[1])

    def seed(self, layers: list[tuple[torch.Tensor, torch.Tensor]], length: int) -> None:
        """Start every row with the same ``length`` cached tokens (positions 0..length-1)."""
        assert self.length == 0, "seed an empty state only"
        for index, (keys, values) in enumerate(layers):
            self.cache.update(
                keys.expand(self.batch, -1, -1, -1).contiguous(),
                values.expand(self.batch, -1, -1, -1).contiguous(),
                index,
            )
        device = self.backend.device
        self.key_pos = torch.arange(length, device=device).expand(self.batch, length).clone()
        self.key_ok = torch.ones((self.batch, length), dtype=torch.bool, device=device)
        self.next_pos = torch.full((self.batch,), length, dtype=torch.long, device=device)

    def crop(self, length: int) -> None:
        """Forget the keys after the first ``length`` (e.g. a tree chunk)."""
        if length >= self.length:
            return
        self.cache.crop(length - self.length)  # negative: the number of tokens to drop
        self.key_pos = self.key_pos[:, :length]
        self.key_ok = self.key_ok[:, :length]

    def extend(self, chunks: list[list[int]], parents: list[list[int]] | None = None) -> torch.Tensor:
        """Feed one chunk of token ids per row (left-padded) and return the hidden
        states ``(batch, T, hidden)``; row ``r``'s token ``k`` sits at column
        ``T - len(chunks[r]) + k``.

        ``parents`` makes each chunk a tree: node ``k`` attends to the cached
        prefix and to its ancestors (``parents[r][k]`` is the index of its parent
        in the chunk, -1 for a root); positions are ``next position + depth`` and
        ``next_pos`` does not advance (tree chunks are cropped afterwards).
        Without ``parents`` a chunk is a plain causal continuation.
        """
        backend = self.backend
        device = backend.device
        batch = len(chunks)
        width = max(1, max((len(c) for c in chunks), default=1))
        pad = backend.pad_id
        rows = [[pad] * (width - len(c)) + list(c) for c in chunks]
        ids = torch.tensor(rows, dtype=torch.long, device=device)
        lengths = torch.tensor([len(c) for c in chunks], dtype=torch.long, device=device)
        columns = torch.arange(width, device=device)
        valid = columns[None, :] >= (width - lengths)[:, None]

        if parents is None:
            offsets = torch.cumsum(valid.long(), dim=1) - 1
            positions = torch.where(valid, self.next_pos[:, None] + offsets, torch.zeros_like(offsets))
            causal = torch.ones((width, width), dtype=torch.bool, device=device).tril()
            new_visible = causal[None, :, :] & valid[:, None, :]
        else:
            depth_rows = [[0] * width for _ in range(batch)]
            visible = torch.zeros((batch, width, width), dtype=torch.bool)
            for r, (chunk, chunk_parents) in enumerate(zip(chunks, parents, strict=True)):
                offset = width - len(chunk)
                depths: list[int] = []
                for k, parent in enumerate(chunk_parents):
                    depths.append(0 if parent < 0 else depths[parent] + 1)
                    depth_rows[r][offset + k] = depths[k]
                    node = k
                    while node >= 0:
                        visible[r, offset + k, offset + node] = True
                        node = chunk_parents[node]
            new_visible = visible.to(device)
            depth = torch.tensor(depth_rows, dtype=torch.long, device=device)
            positions = torch.where(valid, self.next_pos[:, None] + depth, torch.zeros_like(depth))
        # Padding queries attend to themselves: a row with nothing to attend to
        # would yield NaN, and 0 * NaN poisons the rows that ignore it.
        new_visible = new_visible | torch.eye(width, dtype=torch.bool, device=device)[None]

        old_visible = self.key_ok[:, None, :].expand(batch, width, self.length)
        full = torch.cat([old_visible, new_visible], dim=2)
        key_positions = torch.cat([self.key_pos, positions], dim=1)
        mask = backend.attention_masks(full, positions, key_positions)
        output = backend.decoder(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=self.cache,
            use_cache=True,
        )
        self.key_pos = key_positions
        self.key_ok = torch.cat([self.key_ok, valid], dim=1)
        if parents is None:
            self.next_pos = self.next_pos + lengths
        return output.last_hidden_state


# --------------------------------------------------------------------------- categories


@dataclass
class _CategoryTrie:
    """The candidates of the categories slot (codes and ``none``) as a token trie."""

    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    children: dict[int, list[int]] = field(default_factory=dict)  # node (-1 = root) -> child nodes
    # (label, end node) for every candidate; label is a code or "none".
    candidates: list[tuple[str, int]] = field(default_factory=list)
    # End node -> the terminator token ids allowed after it.
    terminators: dict[int, list[int]] = field(default_factory=dict)

    def allowed(self, node: int) -> list[int]:
        ids = [self.tokens[child] for child in self.children.get(node, [])]
        return ids + self.terminators.get(node, [])


@dataclass
class _Item:
    index: int
    request: GuardRequest
    spec: PolicySpec
    input_ids: list[int]
    has_response: bool
    truncated: bool
    # Leading tokens that are the same for every request on this policy (instructions + policy).
    head_len: int = 0


@dataclass
class Generation:
    """One generated completion (also what ``guard_serve`` returns)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"


class RegexConstraint:
    """Token-level constrained decoding against a regular expression.

    A token is allowed when the text so far plus the token can still become a
    full match (``regex`` partial matching); end of text is allowed once the
    text fully matches. Used by ``guard_serve`` for vLLM-style ``regex``
    structured outputs.
    """

    def __init__(self, pattern: str) -> None:
        import regex

        try:
            self._pattern = regex.compile(pattern)
        except regex.error as error:
            raise GuardError(f"invalid structured-output regex: {error}") from error

    def can_continue(self, text: str) -> bool:
        return self._pattern.fullmatch(text, partial=True) is not None

    def is_complete(self, text: str) -> bool:
        return self._pattern.fullmatch(text) is not None


# --------------------------------------------------------------------------- backend


@functools.lru_cache(maxsize=8)
def _load_tokenizer(path: str) -> Any:
    """Tokenizers are shared between backends on one base (a 262k vocabulary takes seconds to load)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


class TransformersBackend:
    """A causal LM (optionally with a merged LoRA adapter) judging guard requests."""

    name = "transformers"

    def __init__(
        self,
        base_path: str | Path,
        adapter_path: str | Path | None = None,
        *,
        device: str | None = None,
        label: str | None = None,
        temperature: float | None = None,
        thresholds: Mapping[str, float] | None = None,
        max_batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        max_input_tokens: int | None = None,
        max_new_tokens: int | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM

        self.label = label or str(base_path)
        self.base_path = Path(base_path)
        self.adapter_path = Path(adapter_path) if adapter_path else None
        self.device = self._pick_device(device or _setting("GUARD_DEVICE", "auto"))
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.temperature = temperature
        self.thresholds: dict[str, float] = dict(thresholds or {})
        self.max_input_tokens = int(max_input_tokens or _setting("GUARD_MAX_INPUT_TOKENS", 2048))
        self.max_new_tokens = int(max_new_tokens or _setting("GUARD_MAX_NEW_TOKENS", 96))
        self.max_batch_size = int(max_batch_size or (256 if self.device.type == "cuda" else 16))
        # Padded tokens fed per forward (CPU cost is linear in them; padding is pure waste).
        self.max_batch_tokens = int(max_batch_tokens or (131072 if self.device.type == "cuda" else 4096))
        self._lock = threading.Lock()
        try:
            self.tokenizer = _load_tokenizer(str(self.base_path))
            model = AutoModelForCausalLM.from_pretrained(
                self.base_path, dtype=self.dtype, attn_implementation="sdpa"
            )
        except Exception as error:  # noqa: BLE001 - any loading failure is a bad model directory
            raise GuardError(f"could not load guard model from {self.base_path}: {error}") from error
        if self.adapter_path is not None:
            try:
                from peft import PeftModel

                # Merged once at load: inference then costs exactly what the base costs.
                model = PeftModel.from_pretrained(model, str(self.adapter_path)).merge_and_unload()
            except Exception as error:  # noqa: BLE001
                raise GuardError(f"could not load LoRA adapter {self.adapter_path}: {error}") from error
        self.model = model.to(self.device).eval()
        self.decoder = self.model.get_decoder()
        self.lm_head = self.model.get_output_embeddings()
        config = self.model.config
        self.softcap = getattr(config, "final_logit_softcapping", None)
        self.sliding_window = getattr(config, "sliding_window", None)
        self.layer_types = set(getattr(config, "layer_types", None) or [])
        self.attn_implementation = getattr(config, "_attn_implementation", "sdpa")
        self._init_vocabulary()

    # ----------------------------------------------------------------- setup

    @staticmethod
    def _pick_device(requested: str) -> torch.device:
        requested = (requested or "auto").lower()
        if requested == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise GuardError("GUARD_DEVICE is cuda but no CUDA device is available")
        if requested not in ("cpu",) and not requested.startswith("cuda"):
            raise GuardError(f"unknown GUARD_DEVICE {requested!r}; expected auto, cpu or cuda")
        return torch.device(requested)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _first_token(self, text: str) -> int:
        ids = self.encode(text)
        if not ids:
            raise GuardError(f"the tokenizer encodes {text!r} as nothing")
        return ids[0]

    def _init_vocabulary(self) -> None:
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        self.bos_token = tok.bos_token or ""
        self.choice_ids: dict[str, dict[str, int]] = {}
        for name, choices in contract.LABEL_CHOICES.items():
            ids = {choice: self._first_token(f" {choice}") for choice in choices}
            if len(set(ids.values())) != len(ids):
                raise GuardError(f"the choices of {name!r} share a first token with this tokenizer")
            self.choice_ids[name] = ids
        self.terminator_ids = [self._first_token(t) for t in CATEGORY_TERMINATORS]
        self.newline_id = self._first_token("\n")
        stops = {tok.eos_token_id}
        end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
        if isinstance(end_of_turn, int) and end_of_turn != tok.unk_token_id:
            stops.add(end_of_turn)
        self.stop_ids = {s for s in stops if s is not None}
        self.special_ids = set(tok.all_special_ids) | {self.pad_id}
        self.answer_start = self.encode(contract.answer_prefix_before(contract.FIELD_PROMPT, {}))
        self._tries: dict[tuple[str, ...], _CategoryTrie] = {}
        self._budgets: dict[PolicySpec, int] = {}
        self._token_text: dict[int, str] = {}
        self._head_ids: dict[str, list[int]] = {}
        # KV of recently used policy heads (instructions + policy block), most recent last.
        self._prefix_kv: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()

    def attention_masks(
        self, visible: torch.Tensor, query_positions: torch.Tensor, key_positions: torch.Tensor
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """4-D masks from a ``(batch, q, k)`` visibility matrix, per layer type."""
        full = visible
        masks: dict[str, torch.Tensor] = {"full_attention": full}
        if self.sliding_window and "sliding_attention" in self.layer_types:
            distance = query_positions[:, :, None] - key_positions[:, None, :]
            masks["sliding_attention"] = full & (distance < self.sliding_window)
        prepared = {name: self._as_4d(mask) for name, mask in masks.items()}
        if "sliding_attention" in self.layer_types:
            return prepared
        return prepared["full_attention"]

    def _as_4d(self, mask: torch.Tensor) -> torch.Tensor:
        mask = mask[:, None, :, :]
        if self.attn_implementation == "sdpa":
            return mask
        # eager attention adds the mask to the scores
        additive = torch.zeros(mask.shape, dtype=self.dtype, device=mask.device)
        return additive.masked_fill(~mask, torch.finfo(self.dtype).min)

    def _trie(self, spec: PolicySpec) -> _CategoryTrie:
        key = spec.codes
        trie = self._tries.get(key)
        if trie is not None:
            return trie
        trie = _CategoryTrie()
        comma, newline = self.terminator_ids
        for label in (*spec.codes, NONE):
            node = -1
            for token in self.encode(f" {label}"):
                child = next((c for c in trie.children.get(node, []) if trie.tokens[c] == token), None)
                if child is None:
                    child = len(trie.tokens)
                    trie.tokens.append(token)
                    trie.parents.append(node)
                    trie.children.setdefault(node, []).append(child)
                node = child
            trie.candidates.append((label, node))
            # "none" stands alone on its line; a code may be followed by another.
            trie.terminators[node] = [newline] if label == NONE else [comma, newline]
        self._tries[key] = trie
        return trie

    def _text_budget(self, spec: PolicySpec) -> int:
        budget = self._budgets.get(spec)
        if budget is None:
            skeleton = contract.render(spec, "x", None, "fast").to_text(self.tokenizer)
            overhead = len(self._input_ids(skeleton)) + ANSWER_RESERVE_TOKENS + self.max_new_tokens
            budget = self.max_input_tokens - overhead
            if budget < 16:
                raise GuardError(
                    f"the policy alone takes about {overhead} tokens; GUARD_MAX_INPUT_TOKENS "
                    f"({self.max_input_tokens}) leaves no room for the conversation"
                )
            self._budgets[spec] = budget
        return budget

    def _input_ids(self, text: str) -> list[int]:
        # A chat template already writes <bos>; the Gemma-marker fallback does not.
        add_bos = not (self.bos_token and text.startswith(self.bos_token))
        return list(self.tokenizer.encode(text, add_special_tokens=add_bos))

    def prepare(self, request: GuardRequest) -> _Item:
        if not isinstance(request.prompt, str) or not request.prompt.strip():
            raise GuardError("the prompt is empty: there is nothing to judge")
        if request.mode not in contract.MODES:
            raise GuardError(f"unknown mode {request.mode!r}; expected fast or reason")
        spec = contract.as_spec(request.policy)
        rendered = contract.render(
            spec,
            request.prompt,
            request.response,
            request.mode,
            tokenizer=self.tokenizer,
            max_text_tokens=self._text_budget(spec),
        )
        text = rendered.to_text(self.tokenizer)
        ids = self._input_ids(text)
        return _Item(0, request, spec, ids, rendered.has_response, rendered.truncated, self._head_length(text, ids))

    def _head_length(self, text: str, ids: list[int]) -> int:
        """How many leading tokens of ``ids`` encode the text before the conversation
        (``"User prompt:"``): the part shared by every request on the same policy.
        0 when there is no such marker or the tokens do not split there."""
        cut = text.find(CONVERSATION_MARKER)
        if cut <= 0:
            return 0
        head = text[:cut]
        head_ids = self._head_ids.get(head)
        if head_ids is None:
            head_ids = self._input_ids(head)
            if len(self._head_ids) > 64:
                self._head_ids.clear()
            self._head_ids[head] = head_ids
        n = len(head_ids)
        return n if n < len(ids) and ids[:n] == head_ids else 0

    # ----------------------------------------------------------------- shared prefix

    def prefix_kv(self, prefix: tuple[int, ...], *, remember: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer (keys, values) of ``prefix`` alone, shape (1, heads, len, dim).

        ``remember`` keeps it in a small LRU cache: a policy head is computed
        once and reused by every later batch on that policy (an online filter
        then only pays for the conversation)."""
        cached = self._prefix_kv.get(prefix)
        if cached is not None:
            self._prefix_kv.move_to_end(prefix)
            return cached
        state = _KVState(self, 1)
        state.extend([list(prefix)])
        layers = [(layer.keys, layer.values) for layer in state.cache.layers]
        if remember:
            self._prefix_kv[prefix] = layers
            while len(self._prefix_kv) > PREFIX_CACHE_ENTRIES:
                self._prefix_kv.popitem(last=False)
        return layers

    def new_state(self, rows: list[list[int]], head_lengths: Sequence[int] | None = None) -> tuple[_KVState, torch.Tensor]:
        """A batch state after feeding ``rows``; returns it and the hidden states of the
        fed suffixes (see ``_KVState.extend``: left-padded, last column = last token).

        The rows' shared leading tokens are computed once (batch of one) and
        their KV copied to every row: the policy head when all rows share it
        (kept in the prefix cache), else the rows' longest common prefix."""
        batch = len(rows)
        state = _KVState(self, batch)
        prefix: tuple[int, ...] = ()
        remember = False
        if head_lengths is not None and head_lengths and min(head_lengths) > 0:
            heads = {tuple(row[:n]) for row, n in zip(rows, head_lengths, strict=True)}
            if len(heads) == 1:
                prefix = heads.pop()
                remember = True
        if not prefix and batch > 1:
            shortest = min(len(row) for row in rows)
            n = 0
            while n < shortest and all(row[n] == rows[0][n] for row in rows):
                n += 1
            prefix = tuple(rows[0][:n])
        prefix = prefix[: max(0, min(len(row) for row in rows) - 1)]  # every row keeps a token to feed
        if len(prefix) >= MIN_SHARED_PREFIX:
            state.seed(self.prefix_kv(prefix, remember=remember), len(prefix))
            rows = [row[len(prefix) :] for row in rows]
        return state, state.extend(rows)

    # ----------------------------------------------------------------- logits

    def _logits(self, hidden: torch.Tensor, token_ids: Sequence[int] | None = None) -> torch.Tensor:
        """LM-head logits (float32) of ``hidden`` for ``token_ids`` only (all when None)."""
        if token_ids is None:
            logits = self.lm_head(hidden)
        else:
            weight = self.lm_head.weight[torch.as_tensor(list(token_ids), device=hidden.device)]
            logits = hidden @ weight.T
            bias = getattr(self.lm_head, "bias", None)
            if bias is not None:
                logits = logits + bias[torch.as_tensor(list(token_ids), device=hidden.device)]
        logits = logits.float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def _label_distribution(
        self, hidden_last: torch.Tensor, field_name: str, choices: Sequence[str]
    ) -> list[dict[str, float]]:
        ids = [self.choice_ids[field_name][c] for c in choices]
        logits = self._logits(hidden_last, ids)
        if self.temperature and self.temperature > 0:
            logits = logits / self.temperature
        probs = torch.softmax(logits, dim=-1).cpu().tolist()
        return [dict(zip(choices, row, strict=True)) for row in probs]

    # ----------------------------------------------------------------- public

    def classify_batch(self, requests: list[GuardRequest], *, constrained: bool = True) -> list[Verdict]:
        """One verdict per request, in order (see the module docstring).

        ``constrained=False`` generates reason-mode answers freely and parses
        them (fast-mode requests are always scored)."""
        if not requests:
            return []
        items = [self.prepare(r) for r in requests]
        for index, item in enumerate(items):
            item.index = index
        verdicts: list[Verdict | None] = [None] * len(items)
        groups: dict[str, list[_Item]] = {}
        for item in items:
            kind = item.request.mode if (item.request.mode == "fast" or constrained) else "free"
            groups.setdefault(kind, []).append(item)
        with self._lock, torch.inference_mode():
            for kind, group in groups.items():
                if kind == "free":
                    fn: Callable[[list[_Item]], list[Verdict]] = self._generate_answers
                else:
                    def fn(batch: list[_Item], explain: bool = kind == "reason") -> list[Verdict]:
                        return self._score(batch, explain=explain)
                for batch in self._batches(group):
                    results = run_in_halving_batches(fn, batch, len(batch), on_out_of_memory=self._remember_oom)
                    for item, verdict in zip(batch, results, strict=True):
                        verdicts[item.index] = verdict
        return [v for v in verdicts if v is not None]

    def _batches(self, items: list[_Item]) -> list[list[_Item]]:
        """Longest first, at most ``max_batch_size`` rows and ``max_batch_tokens``
        padded tokens (the shared policy head is not counted: it is computed once)."""
        def fed(item: _Item) -> int:
            return len(item.input_ids) - item.head_len

        batches: list[list[_Item]] = []
        for item in sorted(items, key=fed, reverse=True):
            if batches:
                current = batches[-1]
                width = fed(current[0])  # the longest of the batch
                if len(current) < self.max_batch_size and (len(current) + 1) * width <= self.max_batch_tokens:
                    current.append(item)
                    continue
            batches.append([item])
        return batches

    def _remember_oom(self, size: int) -> None:
        # A device that ran out of memory once will again: later batches start smaller.
        self.max_batch_size = min(self.max_batch_size, size)

    def generate(
        self,
        texts: list[str],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        regex: str | None = None,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ) -> list[Generation]:
        """Free generation for raw model inputs (``guard_serve``): greedy at
        temperature 0, sampling otherwise; ``regex`` constrains the output."""
        constraint = RegexConstraint(regex) if regex else None
        inputs = [self._input_ids(text) for text in texts]
        context = int(getattr(self.model.config, "max_position_embeddings", 0) or 8192)
        for ids in inputs:
            if len(ids) + max_new_tokens > context:
                raise GuardError(
                    f"the input is {len(ids)} tokens; with max_tokens={max_new_tokens} it exceeds "
                    f"the model's context of {context} tokens"
                )
        generator = None
        if temperature > 0:
            generator = torch.Generator(device="cpu")
            generator.manual_seed(seed if seed is not None else torch.seed())
        with self._lock, torch.inference_mode():
            heads = [self._head_length(text, ids) for text, ids in zip(texts, inputs, strict=True)]
            state, hidden = self.new_state(inputs, heads)
            texts_out, counts, reasons = self._decode(
                state,
                hidden[:, -1],
                max_new_tokens=max_new_tokens,
                stop_at_newline=False,
                temperature=temperature,
                constraint=constraint,
                generator=generator,
                stop=stop,
            )
        return [
            Generation(text, len(ids), count, reason)
            for text, ids, count, reason in zip(texts_out, inputs, counts, reasons, strict=True)
        ]

    # ----------------------------------------------------------------- scoring

    def _score(self, items: list[_Item], *, explain: bool) -> list[Verdict]:
        batch = len(items)
        state, hidden = self.new_state(
            [item.input_ids + self.answer_start for item in items], [item.head_len for item in items]
        )
        prompt_probs = self._label_distribution(hidden[:, -1], contract.FIELD_PROMPT, (SAFE, UNSAFE))
        labels: list[dict[str, str]] = [
            {contract.FIELD_PROMPT: choose_label(self.thresholds, contract.FIELD_PROMPT, p)} for p in prompt_probs
        ]
        probabilities: list[dict[str, dict[str, float]]] = [{contract.FIELD_PROMPT: p} for p in prompt_probs]
        categories_hidden: list[torch.Tensor | None] = [None] * batch

        # Rows without an AI response go straight to "categories:".
        chunks = []
        for i, item in enumerate(items):
            if item.has_response:
                chunks.append(self._between(contract.FIELD_PROMPT, contract.FIELD_RESPONSE, labels[i]))
            else:
                labels[i][contract.FIELD_RESPONSE] = NONE
                labels[i][contract.FIELD_REFUSAL] = NONE
                chunks.append(self._between(contract.FIELD_PROMPT, contract.FIELD_CATEGORIES, labels[i]))
        hidden = state.extend(chunks)
        for i, item in enumerate(items):
            if not item.has_response:
                categories_hidden[i] = hidden[i, -1]

        with_response = [i for i, item in enumerate(items) if item.has_response]
        if with_response:
            steps = (
                (contract.FIELD_RESPONSE, (SAFE, UNSAFE), contract.FIELD_REFUSAL),
                (contract.FIELD_REFUSAL, (contract.REFUSAL, contract.COMPLIANCE), contract.FIELD_CATEGORIES),
            )
            for field_name, choices, next_field in steps:
                dists = self._label_distribution(hidden[with_response, -1], field_name, choices)
                chunks = [[] for _ in items]
                for i, dist in zip(with_response, dists, strict=True):
                    probabilities[i][field_name] = dist
                    labels[i][field_name] = choose_label(self.thresholds, field_name, dist)
                    chunks[i] = self._between(field_name, next_field, labels[i])
                hidden = state.extend(chunks)
            for i in with_response:
                categories_hidden[i] = hidden[i, -1]

        category_probs = self._category_distributions(
            state, items, torch.stack([h for h in categories_hidden if h is not None])
        )
        verdicts: list[Verdict] = []
        codes_per_row: list[list[str]] = []
        for i, item in enumerate(items):
            dist = category_probs[i]
            probabilities[i][contract.FIELD_CATEGORIES] = dist
            unsafe = UNSAFE in (labels[i][contract.FIELD_PROMPT], labels[i].get(contract.FIELD_RESPONSE))
            codes = self._decide_categories(item.spec, dist) if unsafe else []
            codes_per_row.append(codes)
            primary = contract.primary_field(item.has_response)
            verdict = Verdict(
                prompt_label=labels[i][contract.FIELD_PROMPT],
                response_label=labels[i][contract.FIELD_RESPONSE] if item.has_response else None,
                refusal_label=labels[i][contract.FIELD_REFUSAL] if item.has_response else None,
                categories=codes,
                explanation="",
                confidence=probabilities[i][primary][UNSAFE],
                probabilities=probabilities[i],
                truncated=item.truncated,
                mode="fast",
            )
            verdict.raw_output = contract.format_answer(verdict, item.has_response)
            verdicts.append(verdict)
        if not explain:
            return verdicts

        chunks = [
            self._between(contract.FIELD_CATEGORIES, contract.FIELD_EXPLANATION, labels[i], codes_per_row[i])
            for i in range(batch)
        ]
        hidden = state.extend(chunks)
        explanations, _, _ = self._decode(
            state, hidden[:, -1], max_new_tokens=self.max_new_tokens, stop_at_newline=True
        )
        results = []
        for item, verdict, explanation in zip(items, verdicts, explanations, strict=True):
            verdict.explanation = explanation.strip()
            verdict.mode = "reason"
            raw = contract.format_answer(verdict, item.has_response)
            parsed = contract.parse(raw, item.spec, item.has_response)
            if parsed.verdict is None:
                assert parsed.error is not None
                failed = contract.failed_verdict(parsed.error, item.has_response, mode="reason")
                failed.truncated = item.truncated
                failed.probabilities = verdict.probabilities
                results.append(failed)
                continue
            final = parsed.verdict
            final.confidence = verdict.confidence
            final.probabilities = verdict.probabilities
            final.truncated = item.truncated
            final.mode = "reason"
            results.append(final)
        return results

    def _between(
        self, field_name: str, next_field: str, labels: dict[str, str], codes: Sequence[str] = ()
    ) -> list[int]:
        """Token ids of the answer text from after ``"<field>:"`` to ``"<next_field>:"``."""
        before = contract.answer_prefix_before(field_name, labels, codes)
        after = contract.answer_prefix_before(next_field, labels, codes)
        if not after.startswith(before):
            raise RuntimeError(f"answer prefix for {next_field!r} does not extend the one for {field_name!r}")
        return self.encode(after[len(before) :])

    def _category_distributions(
        self, state: _KVState, items: list[_Item], root_hidden: torch.Tensor
    ) -> list[dict[str, float]]:
        tries = [self._trie(item.spec) for item in items]
        union = sorted({t for trie in tries for t in (*trie.tokens, *self.terminator_ids)})
        column = {token: j for j, token in enumerate(union)}
        root_logits = self._logits(root_hidden, union).cpu()
        length = state.length
        hidden = state.extend([trie.tokens for trie in tries], parents=[trie.parents for trie in tries])
        width = hidden.shape[1]
        node_logits = self._logits(hidden, union).cpu()
        state.crop(length)

        def log_prob(row: int, trie: _CategoryTrie, node: int, token: int) -> float:
            allowed = trie.allowed(node)
            if node < 0:
                logits = root_logits[row]
            else:
                logits = node_logits[row, width - len(trie.tokens) + node]
            values = logits[[column[t] for t in allowed]]
            return float(values[allowed.index(token)] - torch.logsumexp(values, dim=0))

        results: list[dict[str, float]] = []
        for row, trie in enumerate(tries):
            scores: dict[str, float] = {}
            for label, end in trie.candidates:
                total = 0.0
                node = end
                path = []
                while node >= 0:
                    path.append(node)
                    node = trie.parents[node]
                parent = -1
                for node in reversed(path):
                    total += log_prob(row, trie, parent, trie.tokens[node])
                    parent = node
                allowed = trie.allowed(end)
                if len(allowed) > len(trie.terminators[end]):
                    # Probability that the candidate ends here rather than growing into a longer code.
                    logits = node_logits[row, width - len(trie.tokens) + end][[column[t] for t in allowed]]
                    ends = logits[len(allowed) - len(trie.terminators[end]) :]
                    total += float(torch.logsumexp(ends, 0) - torch.logsumexp(logits, 0))
                scores[label] = total
            values = torch.softmax(torch.tensor(list(scores.values())), dim=0).tolist()
            results.append(dict(zip(scores, values, strict=True)))
        return results

    @staticmethod
    def _decide_categories(spec: PolicySpec, dist: dict[str, float]) -> list[str]:
        codes = [c for c in spec.codes if c in dist]
        if not codes:
            return []
        chosen = {c for c in codes if dist[c] >= contract.CATEGORY_THRESHOLD}
        chosen.add(max(codes, key=dist.__getitem__))
        return [c for c in spec.codes if c in chosen]  # policy order

    # ----------------------------------------------------------------- generation

    def _token_str(self, token: int) -> str:
        text = self._token_text.get(token)
        if text is None:
            text = self.tokenizer.decode([token], skip_special_tokens=True)
            self._token_text[token] = text
        return text

    def _decode(
        self,
        state: _KVState,
        hidden_last: torch.Tensor,
        *,
        max_new_tokens: int,
        stop_at_newline: bool,
        temperature: float = 0.0,
        constraint: RegexConstraint | None = None,
        generator: torch.Generator | None = None,
        stop: Sequence[str] = (),
    ) -> tuple[list[str], list[int], list[str]]:
        """Continue every row of ``state``; returns (texts, token counts, finish reasons).

        Generation of a row ends at a stop token, at a newline when
        ``stop_at_newline``, at any of the ``stop`` strings (cut off, like the
        OpenAI API), or after ``max_new_tokens``."""
        batch = hidden_last.shape[0]
        tokens: list[list[int]] = [[] for _ in range(batch)]
        texts = [""] * batch
        reasons = ["length"] * batch
        active = [True] * batch
        banned_first = sorted({*self.stop_ids, self.newline_id}) if stop_at_newline else []
        for step in range(max_new_tokens):
            logits = self._logits(hidden_last)
            if step == 0 and banned_first:
                # An explanation has at least one token (the answer regex demands it).
                logits[:, banned_first] = float("-inf")
            chosen: list[int | None] = [None] * batch
            for row in range(batch):
                if not active[row]:
                    continue
                token = self._pick(logits[row], texts[row], temperature, constraint, generator)
                if token is None or token in self.stop_ids:
                    active[row] = False
                    reasons[row] = "stop"
                    continue
                tokens[row].append(token)
                text = self.tokenizer.decode(tokens[row], skip_special_tokens=True)
                if stop_at_newline and "\n" in text:
                    text = text.split("\n", 1)[0]
                    active[row] = False
                    reasons[row] = "stop"
                for marker in stop:
                    if marker and marker in text:
                        text = text.split(marker, 1)[0]
                        active[row] = False
                        reasons[row] = "stop"
                texts[row] = text
                if active[row]:
                    chosen[row] = token
            if not any(active):
                break
            if step == max_new_tokens - 1:
                break
            hidden = state.extend([[t] if t is not None else [] for t in chosen])
            hidden_last = hidden[:, -1]
        return texts, [len(t) for t in tokens], reasons

    def _pick(
        self,
        logits: torch.Tensor,
        text: str,
        temperature: float,
        constraint: RegexConstraint | None,
        generator: torch.Generator | None,
    ) -> int | None:
        """The next token: greedy (temperature 0) or sampled from the top 64, under
        ``constraint``. None means: stop here (the constraint allows nothing else)."""
        if constraint is None and temperature <= 0:
            return int(torch.argmax(logits))
        complete = constraint.is_complete(text) if constraint is not None else True
        top = torch.topk(logits, k=min(64, logits.shape[-1]))
        candidates = top.indices.tolist()
        values = top.values
        if constraint is not None:
            keep = [j for j, token in enumerate(candidates) if self._allowed(token, text, complete, constraint)]
            if keep:
                candidates = [candidates[j] for j in keep]
                values = values[keep]
            else:
                # The model's favourites are all forbidden: search the whole vocabulary.
                candidates = self._allowed_in_vocabulary(text, complete, constraint)
                if not candidates:
                    return None
                values = logits[candidates]
                order = torch.argsort(values, descending=True)[:64]
                candidates = [candidates[int(j)] for j in order]
                values = values[order]
        if temperature <= 0:
            return candidates[0]
        probs = torch.softmax(values.float().cpu() / temperature, dim=0)
        return candidates[int(torch.multinomial(probs, 1, generator=generator))]

    def _allowed_in_vocabulary(self, text: str, complete: bool, constraint: RegexConstraint) -> list[int]:
        """Every token the constraint allows next. Tokens are grouped by their first
        one and two characters, so only the groups whose prefix can continue the
        match are checked token by token."""
        if not hasattr(self, "_by_first_char"):
            pieces = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))], skip_special_tokens=True)
            groups: dict[str, dict[str, list[int]]] = {}
            for token, piece in enumerate(pieces):
                self._token_text[token] = piece
                if piece and token not in self.special_ids:
                    groups.setdefault(piece[0], {}).setdefault(piece[:2], []).append(token)
            self._by_first_char = groups
        allowed = [t for t in self.stop_ids if complete]
        # Answer blocks are ASCII except in free text: probe ASCII first, and all
        # ~30k first characters only when non-ASCII text may follow or ASCII found nothing.
        chars: list[str] = [c for c in _ASCII_PROBE if c in self._by_first_char]
        if any(constraint.can_continue(text + c) for c in _NON_ASCII_PROBE):
            chars = list(self._by_first_char)
        found = self._tokens_for_chars(chars, text, constraint)
        if not found and len(chars) < len(self._by_first_char):
            found = self._tokens_for_chars(list(self._by_first_char), text, constraint)
        return allowed + found

    def _tokens_for_chars(self, chars: list[str], text: str, constraint: RegexConstraint) -> list[int]:
        found: list[int] = []
        for char in chars:
            if not constraint.can_continue(text + char):
                continue
            for prefix, tokens in self._by_first_char[char].items():
                if len(prefix) == 1 or constraint.can_continue(text + prefix):
                    found.extend(t for t in tokens if constraint.can_continue(text + self._token_text[t]))
        return found

    def _allowed(self, token: int, text: str, complete: bool, constraint: RegexConstraint) -> bool:
        if token in self.stop_ids:
            return complete
        if token in self.special_ids:
            return False
        piece = self._token_str(token)
        # A token that adds no text would let a constrained decoder loop forever.
        return bool(piece) and constraint.can_continue(text + piece)

    # ----------------------------------------------------------------- free answers

    def _generate_answers(self, items: list[_Item]) -> list[Verdict]:
        state, hidden = self.new_state([item.input_ids for item in items], [item.head_len for item in items])
        texts, _, _ = self._decode(
            state,
            hidden[:, -1],
            max_new_tokens=self.max_new_tokens + LABEL_LINES_TOKENS,
            stop_at_newline=False,
        )
        verdicts = []
        for item, text in zip(items, texts, strict=True):
            parsed = contract.parse(text, item.spec, item.has_response)
            if parsed.verdict is None:
                assert parsed.error is not None
                verdict = contract.failed_verdict(parsed.error, item.has_response, mode="reason")
            else:
                verdict = parsed.verdict
                verdict.mode = "reason"
            verdict.raw_output = text
            verdict.truncated = item.truncated
            verdicts.append(verdict)
        return verdicts
