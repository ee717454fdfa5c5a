"""Rendering and tokenising guard requests for the transformers backend (step 0 of
its module docstring): two batched tokenizer calls per batch, the policy head
encoded once per policy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from guard import contract
from guard.backends.base import GuardError, GuardRequest
from guard.contract import PolicySpec

# Room kept free in the input budget for the answer block that follows the input.
ANSWER_RESERVE_TOKENS = 48
# Where the conversation starts in a rendered input (contract.render): everything
# before it depends only on the policy, so its KV is computed once and shared.
CONVERSATION_MARKER = "User prompt:"
# Text after a policy head used to check that the head's tokens end where the conversation starts.
_SPLIT_PROBE = "User prompt:\nhello\n\nAI response: none"


@dataclass
class PreparedItem:
    index: int
    request: GuardRequest
    spec: PolicySpec
    input_ids: list[int]
    has_response: bool
    truncated: bool
    # Leading tokens that are the same for every request on this policy (instructions + policy).
    head_len: int = 0


class _PreEncoded:
    """A tokenizer whose ``encode`` answers from one batched call made beforehand
    (``contract.render`` counts the tokens of each text it may truncate)."""

    def __init__(self, tokenizer: Any, known: dict[str, list[int]]) -> None:
        self.tokenizer = tokenizer
        self.known = known

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = self.known.get(text) if not add_special_tokens else None
        return ids if ids is not None else list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


class InputsMixin:
    """Input preparation of ``TransformersBackend`` (uses its tokenizer, budgets and caches)."""

    tokenizer: Any
    bos_token: str
    max_input_tokens: int
    max_new_tokens: int
    _budgets: dict[PolicySpec, int]
    _head_ids: dict[str, list[int] | None]
    _between_ids: dict[tuple, list[int]]

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _encode_many(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _first_token(self, text: str) -> int:
        ids = self.encode(text)
        if not ids:
            raise GuardError(f"the tokenizer encodes {text!r} as nothing")
        return ids[0]

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

    # ----------------------------------------------------------------- input

    def prepare(self, request: GuardRequest) -> PreparedItem:
        return self.prepare_batch([request])[0]

    def prepare_batch(self, requests: Sequence[GuardRequest]) -> list[PreparedItem]:
        """Render and tokenise ``requests`` with two batched tokenizer calls (see step 0)."""
        for request in requests:
            if not isinstance(request.prompt, str) or not request.prompt.strip():
                raise GuardError("the prompt is empty: there is nothing to judge")
            if request.mode not in contract.MODES:
                raise GuardError(f"unknown mode {request.mode!r}; expected fast or reason")
        specs = [contract.as_spec(request.policy) for request in requests]
        texts: dict[str, None] = {}
        for request in requests:
            texts[request.prompt.strip()] = None
            if isinstance(request.response, str) and request.response.strip():
                texts[request.response.strip()] = None
        counted = _PreEncoded(self.tokenizer, dict(zip(texts, self._encode_many(list(texts)), strict=True)))
        rendered = [
            contract.render(
                spec, request.prompt, request.response, request.mode, tokenizer=counted, max_text_tokens=self._text_budget(spec)
            )
            for request, spec in zip(requests, specs, strict=True)
        ]
        full_texts = [r.to_text(self.tokenizer) for r in rendered]
        cuts = [text.find(CONVERSATION_MARKER) for text in full_texts]
        heads = [self._split_head(text[:cut]) if cut > 0 else None for text, cut in zip(full_texts, cuts, strict=True)]
        tails = self._encode_many(
            [text[cut:] for text, cut, head in zip(full_texts, cuts, heads, strict=True) if head is not None]
        )
        items: list[PreparedItem] = []
        tail_iter = iter(tails)
        for index, (request, spec, text, head, r) in enumerate(zip(requests, specs, full_texts, heads, rendered, strict=True)):
            if head is not None:
                ids, head_len = head + next(tail_iter), len(head)
            else:
                ids = self._input_ids(text)
                head_len = 0
            items.append(PreparedItem(index, request, spec, ids, r.has_response, r.truncated, head_len))
        return items

    def _split_head(self, head: str) -> list[int] | None:
        """The ids of a policy head, when a rendered input's tokens split exactly where
        the conversation starts (checked once per head); None otherwise."""
        if head not in self._head_ids:
            head_ids = self._input_ids(head)
            probe = self._input_ids(head + _SPLIT_PROBE)
            ok = probe == head_ids + self.encode(_SPLIT_PROBE)
            if len(self._head_ids) > 64:
                self._head_ids.clear()
            self._head_ids[head] = head_ids if ok else None
        return self._head_ids[head]

    def _head_length(self, text: str, ids: list[int]) -> int:
        """How many leading tokens of ``ids`` encode the text before the conversation
        (``"User prompt:"``); 0 when there is no such marker or the tokens do not split there."""
        cut = text.find(CONVERSATION_MARKER)
        if cut <= 0:
            return 0
        head_ids = self._split_head(text[:cut])
        if head_ids is None:
            return 0
        n = len(head_ids)
        return n if n < len(ids) and ids[:n] == head_ids else 0

    def _between(
        self, field_name: str, next_field: str, labels: dict[str, str], codes: Sequence[str] = ()
    ) -> list[int]:
        """Token ids of the answer text from after ``"<field>:"`` to ``"<next_field>:"``."""
        key = (field_name, next_field, tuple(sorted(labels.items())), tuple(codes))
        ids = self._between_ids.get(key)
        if ids is None:
            before = contract.answer_prefix_before(field_name, labels, codes)
            after = contract.answer_prefix_before(next_field, labels, codes)
            if not after.startswith(before):
                raise RuntimeError(f"answer prefix for {next_field!r} does not extend the one for {field_name!r}")
            ids = self.encode(after[len(before) :])
            self._between_ids[key] = ids
        return ids
