"""The transformers backend: the guard model in-process, on CPU or CUDA.

Both modes share one constrained scoring pass over the answer block of
``guard.contract`` (answer first: ``prompt/response/refusal/categories``, then
``explanation``), so fast and reason modes always agree on the labels.

How a batch is judged
=====================

0. **Tokenise once, in batch.** Requests are rendered with ``contract.render``
   (the conversation truncated by tokens so the input fits
   ``GUARD_MAX_INPUT_TOKENS``; the texts' token counts come from one batched
   tokenizer call). The rendered input splits at ``"User prompt:"`` into the
   policy head (the same for every request on a policy: encoded once and
   cached) and the conversation (all of a batch's encoded in one call).
   Requests are grouped by policy head and bucketed by length, so rows of a
   batch are about equally long and padding stays small.

1. **Prefill.** The policy head's keys and values are computed once per policy
   (kept in a small LRU cache) and shared by every row without a per-row copy
   (``gemma_runner``). Each row's conversation and the answer prefix
   ``"prompt:"`` are fed right-padded; only the hidden state of each row's last
   real token goes through the LM head, and only for the token ids needed —
   never the 262k vocabulary at every position.

2. **Label fields** (``LABEL_CHOICES``). The distribution of a field is the
   softmax of the logits of the *first token* of each choice (``" safe"``,
   ``" unsafe"``, ...), renormalised over the choices valid for the request
   (``response``/``refusal`` when there is an AI response; forced to ``none``
   otherwise), divided by an optional calibration temperature. The label is the
   argmax, or, with a calibrated threshold for the field, the positive label
   (``unsafe``/``refusal``) as soon as its probability reaches the threshold
   (``guard.calibration.choose_label``; the same rule runs on the device).
   The next field is scored by one short forward that teacher-forces the
   chosen label: the text between the two field names (``" unsafe\\nresponse:"``)
   is picked per row from a small table of every label's chunk, on the device.
   A request without an AI response appends
   ``" <prompt label>\\nresponse: none\\nrefusal: none\\ncategories:"`` at once.

3. **Categories** (``guard.backends.categories``): every code and ``none`` as
   a token trie fed as ONE tree chunk; all candidates of all rows are scored
   with a few gathers. Multi-label decision: the codes reaching
   ``CATEGORY_THRESHOLD``, at least the most probable when the verdict is
   unsafe, none when it is safe.

   Fast mode reads everything back with **one host sync per batch**.

4. **Reason mode** continues the same cache with the chosen categories and
   ``"\\nexplanation:"`` and decodes the explanation greedily for the whole
   batch on the device (one argmax per step for all rows, stop checks on token
   ids, finished rows dropped every few steps, at most ``GUARD_MAX_NEW_TOKENS``
   tokens), detokenising once at the end. The answer text is built with
   ``contract.format_answer`` and checked with ``contract.parse``.
   ``classify_batch(..., constrained=False)`` instead generates the whole
   answer freely and parses it: that is how training and evaluation measure a
   fine-tuned model's real parse failures.

5. **Latent heads** (``guard.backends.head_scoring``): a model that carries heads decides fast
   verdicts with them instead of steps 1-3 (one forward over the plain conversation), and
   reason verdicts run steps 1-4 with the heads' labels and codes teacher-forced.

Out of GPU memory, a batch is halved and retried (``run_in_halving_batches``).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from guard import contract
from guard.backends.base import GuardError, GuardRequest, setting
from guard.backends.batching import partition, run_in_halving_batches
from guard.backends.categories import CategoryTable, CategoryTrie, decide_categories
from guard.backends.decoding import RegexConstraint, Vocabulary
from guard.backends.gemma_runner import GemmaRunner, Prefix, UnsupportedModel
from guard.backends.generation import Generation, GenerationMixin
from guard.backends.head_scoring import HeadsMixin
from guard.backends.inputs import InputsMixin, PreparedItem
from guard.backends.prefill import PrefillMixin
from guard.calibration import POSITIVE_LABEL
from guard.contract import NONE, SAFE, UNSAFE, PolicySpec, Verdict
from guard.heads import HeadDecision

# Re-exported: tests, guard_serve and bench scripts import these from here.
__all__ = ["Generation", "RegexConstraint", "TransformersBackend", "partition", "run_in_halving_batches"]

logger = logging.getLogger(__name__)

CATEGORY_TERMINATORS = (",", "\n")



# --------------------------------------------------------------------------- backend


@functools.lru_cache(maxsize=8)
def _load_tokenizer(path: str) -> Any:
    """Tokenizers are shared between backends on one base (a 262k vocabulary takes seconds to load)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


class TransformersBackend(InputsMixin, PrefillMixin, GenerationMixin, HeadsMixin):
    """A Gemma 3 causal LM (optionally with a merged LoRA adapter) judging guard requests."""

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
        heads_path: str | Path | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM

        self.label = label or str(base_path)
        self.base_path = Path(base_path)
        self.adapter_path = Path(adapter_path) if adapter_path else None
        self.device = self._pick_device(device or setting("GUARD_DEVICE", "auto"))
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.temperature = temperature
        self.thresholds: dict[str, float] = dict(thresholds or {})
        self.max_input_tokens = int(max_input_tokens or setting("GUARD_MAX_INPUT_TOKENS", 2048))
        self.max_new_tokens = int(max_new_tokens or setting("GUARD_MAX_NEW_TOKENS", 96))
        self.max_batch_size = int(max_batch_size or (256 if self.device.type == "cuda" else 64))
        # Padded tokens fed per forward (CPU cost is linear in them; padding is pure waste).
        self.max_batch_tokens = int(max_batch_tokens or (131072 if self.device.type == "cuda" else 8192))
        # What one more batch, or one more prefill forward within a batch, costs in
        # padded tokens: splitting by length pays off when it saves more padding.
        self.batch_overhead_tokens = 16384 if self.device.type == "cuda" else 256
        self.bucket_overhead_tokens = 8192 if self.device.type == "cuda" else 64
        self._lock = threading.Lock()
        try:
            self.tokenizer = _load_tokenizer(str(self.base_path))
            model = AutoModelForCausalLM.from_pretrained(self.base_path, dtype=self.dtype, attn_implementation="sdpa")
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
        try:
            self.runner = GemmaRunner(self.model)
        except UnsupportedModel as error:
            raise GuardError(
                f"the transformers backend runs Gemma 3 guard models; {self.base_path} is not one ({error}). "
                "Serve other architectures with GUARD_BACKEND=vllm or openai."
            ) from error
        self._init_vocabulary()
        self._init_heads(Path(heads_path) if heads_path else None)

    @functools.cached_property
    def feature_fingerprint(self) -> str:
        """The served weights' identity for the latent heads' feature cache (``guard.features``)."""
        from guard.features import backbone_fingerprint

        return backbone_fingerprint(self.base_path, self.adapter_path)

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
        self.vocabulary = Vocabulary(tok, self.stop_ids, self.special_ids)
        self.answer_start = self.encode(contract.answer_prefix_before(contract.FIELD_PROMPT, {}))
        self._tries: dict[tuple[str, ...], CategoryTrie] = {}
        self._tables: dict[tuple[str, ...], CategoryTable] = {}
        self._budgets: dict[PolicySpec, int] = {}
        self._head_ids: dict[str, list[int] | None] = {}
        self._between_ids: dict[tuple, list[int]] = {}
        self._prefix_kv: OrderedDict[tuple[int, ...], Prefix] = OrderedDict()
        device = self.device
        self._choice_tensors = {
            name: torch.tensor([ids[c] for c in choices if c != NONE], dtype=torch.long, device=device)
            for name, ids in self.choice_ids.items()
            for choices in [contract.LABEL_CHOICES[name]]
        }
        self._stop_tensor = torch.tensor(sorted(self.stop_ids), dtype=torch.long, device=device)
        prompt_choices = (SAFE, UNSAFE)
        self._after_prompt = self._chunk_table(
            [self._between(contract.FIELD_PROMPT, contract.FIELD_RESPONSE, {contract.FIELD_PROMPT: p}) for p in prompt_choices]
            + [
                self._between(
                    contract.FIELD_PROMPT,
                    contract.FIELD_CATEGORIES,
                    {contract.FIELD_PROMPT: p, contract.FIELD_RESPONSE: NONE, contract.FIELD_REFUSAL: NONE},
                )
                for p in prompt_choices
            ]
        )
        self._after_response = self._chunk_table(
            [self._between(contract.FIELD_RESPONSE, contract.FIELD_REFUSAL, {contract.FIELD_RESPONSE: r}) for r in (SAFE, UNSAFE)]
        )
        self._after_refusal = self._chunk_table(
            [
                self._between(contract.FIELD_REFUSAL, contract.FIELD_CATEGORIES, {contract.FIELD_REFUSAL: r})
                for r in (contract.REFUSAL, contract.COMPLIANCE)
            ]
        )

    def _trie(self, spec: PolicySpec) -> CategoryTrie:
        trie = self._tries.get(spec.codes)
        if trie is None:
            comma, newline = self.terminator_ids
            trie = CategoryTrie.build(spec, self.encode, comma, newline)
            self._tries[spec.codes] = trie
        return trie

    def _table(self, spec: PolicySpec) -> CategoryTable:
        table = self._tables.get(spec.codes)
        if table is None:
            table = CategoryTable(self._trie(spec), self.device)
            self._tables[spec.codes] = table
        return table

    # ----------------------------------------------------------------- labels

    def _distribution(self, hidden: torch.Tensor, field_name: str) -> torch.Tensor:
        """(B, 2) probabilities of the field's two real choices, in ``LABEL_CHOICES`` order."""
        logits = self.runner.logits(hidden, self._choice_tensors[field_name])
        if self.temperature and self.temperature > 0:
            logits = logits / self.temperature
        return torch.softmax(logits, dim=-1)

    def _decide(self, probs: torch.Tensor, field_name: str) -> torch.Tensor:
        """``choose_label`` on the device: index of the chosen choice per row."""
        choices = [c for c in contract.LABEL_CHOICES[field_name] if c != NONE]
        threshold = self.thresholds.get(field_name)
        positive = POSITIVE_LABEL.get(field_name)
        if threshold is None or positive not in choices:
            return torch.argmax(probs, dim=-1)
        index = choices.index(positive)
        # float64 compare: exactly Python's ``p >= threshold`` on the same float32 value.
        reaches = probs[:, index].double() >= threshold
        return torch.where(reaches, torch.full_like(reaches, index, dtype=torch.long), torch.full_like(reaches, 1 - index, dtype=torch.long))

    # ----------------------------------------------------------------- public

    def classify_batch(self, requests: list[GuardRequest], *, constrained: bool = True) -> list[Verdict]:
        """One verdict per request, in order (see the module docstring).

        ``constrained=False`` generates reason-mode answers freely and parses
        them (fast-mode requests are always scored)."""
        if not requests:
            return []
        items = self.prepare_batch(requests)
        verdicts: list[Verdict | None] = [None] * len(items)
        groups: dict[str, list[PreparedItem]] = {}
        for item in items:
            kind = item.request.mode if (item.request.mode == "fast" or constrained) else "free"
            groups.setdefault(kind, []).append(item)
        with self._lock, torch.inference_mode():
            for kind, group in groups.items():
                # Fast verdicts by the heads read the plain conversation: policies need not be batched apart.
                for batch in self._batches(group, by_policy=not (self.heads is not None and kind == "fast")):
                    if kind == "free":
                        fn: Callable[[list[PreparedItem]], list[Verdict]] = self._generate_answers
                    elif self.heads is not None and kind == "fast":
                        fn = self._fast_by_heads
                    elif self.heads is not None:
                        fn = self._reason_by_heads
                    else:
                        fn = functools.partial(self._score, explain=kind == "reason")
                    results = run_in_halving_batches(fn, batch, len(batch), on_out_of_memory=self._remember_oom)
                    for item, verdict in zip(batch, results, strict=True):
                        verdicts[item.index] = verdict
        return [v for v in verdicts if v is not None]

    # ----------------------------------------------------------------- scoring

    def _score(self, items: list[PreparedItem], *, explain: bool, forced: list[HeadDecision] | None = None) -> list[Verdict]:
        batch = len(items)
        device = self.device
        table = self._table(items[0].spec)
        any_response = any(item.has_response for item in items)
        reserve = self._after_prompt.width + table.tokens.shape[0] + 8
        if any_response:
            reserve += self._after_response.width + self._after_refusal.width
        cache, last = self._start(
            [item.input_ids + self.answer_start for item in items], [item.head_len for item in items], reserve
        )
        has_response = torch.tensor([item.has_response for item in items], dtype=torch.bool).to(device, non_blocking=True)

        prompt_probs = self._distribution(last, contract.FIELD_PROMPT)
        prompt_choice = (
            self._decide(prompt_probs, contract.FIELD_PROMPT) if forced is None else self._forced_choice(forced, contract.FIELD_PROMPT)
        )
        # Variants 0/1: "<label>\nresponse:"; 2/3: "<label>\nresponse: none\nrefusal: none\ncategories:".
        variant = prompt_choice + 2 * (~has_response).long()
        root = self._feed(cache, self._after_prompt, variant)
        packed = [prompt_probs, prompt_choice[:, None].float()]
        if any_response:
            response_probs = self._distribution(root, contract.FIELD_RESPONSE)
            response_choice = (
                self._decide(response_probs, contract.FIELD_RESPONSE)
                if forced is None
                else self._forced_choice(forced, contract.FIELD_RESPONSE)
            )
            hidden = self._feed(cache, self._after_response, response_choice, keep=has_response)
            refusal_probs = self._distribution(hidden, contract.FIELD_REFUSAL)
            refusal_choice = (
                self._decide(refusal_probs, contract.FIELD_REFUSAL)
                if forced is None
                else self._forced_choice(forced, contract.FIELD_REFUSAL)
            )
            hidden = self._feed(cache, self._after_refusal, refusal_choice, keep=has_response)
            root = torch.where(has_response[:, None], hidden, root)
            packed += [response_probs, response_choice[:, None].float(), refusal_probs, refusal_choice[:, None].float()]

        width = table.tokens.shape[0]
        tree = self.runner.forward(
            cache, table.tokens[None].expand(batch, width), tree_depth=table.depth, tree_visible=table.visible
        )
        slots = torch.cat([root[:, None], tree], dim=1)
        category_probs = table.probabilities(self.runner.logits(slots, table.union))
        packed.append(category_probs)
        host = torch.cat(packed, dim=1).tolist()  # the one host sync of a fast batch

        verdicts, codes_per_row, labels_per_row = [], [], []
        for index, (item, row) in enumerate(zip(items, host, strict=True)):
            probabilities, labels = self._read_row(item, row, table.labels)
            unsafe = UNSAFE in (labels[contract.FIELD_PROMPT], labels.get(contract.FIELD_RESPONSE))
            if forced is not None:
                codes = list(forced[index].categories)
            else:
                codes = decide_categories(item.spec, probabilities[contract.FIELD_CATEGORIES]) if unsafe else []
            verdict = Verdict(
                prompt_label=labels[contract.FIELD_PROMPT],
                response_label=labels[contract.FIELD_RESPONSE] if item.has_response else None,
                refusal_label=labels[contract.FIELD_REFUSAL] if item.has_response else None,
                categories=codes,
                explanation="",
                confidence=probabilities[contract.primary_field(item.has_response)][UNSAFE],
                probabilities=probabilities,
                truncated=item.truncated,
                mode="fast",
            )
            verdict.raw_output = contract.format_answer(verdict, item.has_response)
            verdicts.append(verdict)
            codes_per_row.append(codes)
            labels_per_row.append(labels)
        if not explain:
            return verdicts
        return self._explain(cache, items, verdicts, labels_per_row, codes_per_row)

    def _read_row(
        self, item: PreparedItem, row: list[float], category_labels: list[str]
    ) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
        """One row of the packed fast-mode tensor as probabilities and labels."""
        fields = [contract.FIELD_PROMPT]
        if len(row) > 3 + len(category_labels):
            fields += [contract.FIELD_RESPONSE, contract.FIELD_REFUSAL]
        probabilities: dict[str, dict[str, float]] = {}
        labels: dict[str, str] = {}
        at = 0
        for name in fields:
            choices = [c for c in contract.LABEL_CHOICES[name] if c != NONE]
            if name == contract.FIELD_PROMPT or item.has_response:
                probabilities[name] = dict(zip(choices, row[at : at + 2], strict=True))
                labels[name] = choices[int(row[at + 2])]
            at += 3
        if not item.has_response:
            labels[contract.FIELD_RESPONSE] = NONE
            labels[contract.FIELD_REFUSAL] = NONE
        probabilities[contract.FIELD_CATEGORIES] = dict(zip(category_labels, row[at:], strict=True))
        return probabilities, labels

    @staticmethod
    def _decide_categories(spec: PolicySpec, dist: dict[str, float]) -> list[str]:
        return decide_categories(spec, dist)

