"""Token choice for free generation: the vocabulary's text, regex constraints, sampling.

Greedy decoding of explanations runs entirely on the device (see
``TransformersBackend._greedy``); it needs only ``Vocabulary.newline_mask``.
Sampling and regex-constrained decoding (``guard_serve``) choose per row on
the host with ``pick``.
"""

from __future__ import annotations

from typing import Any

import torch

from guard.backends.base import GuardError

_ASCII_PROBE = [chr(i) for i in range(32, 127)] + ["\n", "\t"]
_NON_ASCII_PROBE = ["é", "ж", "中", "😀"]


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


class Vocabulary:
    """What each token id writes, decoded once (lazily: 262k tokens take a second or two)."""

    def __init__(self, tokenizer: Any, stop_ids: set[int], special_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.stop_ids = stop_ids
        self.special_ids = special_ids
        self._pieces: list[str] | None = None
        self._by_first_char: dict[str, dict[str, list[int]]] | None = None
        self._newline_masks: dict[torch.device, torch.Tensor] = {}

    @property
    def pieces(self) -> list[str]:
        if self._pieces is None:
            size = len(self.tokenizer)
            self._pieces = self.tokenizer.batch_decode([[i] for i in range(size)], skip_special_tokens=True)
        return self._pieces

    def piece(self, token: int) -> str:
        pieces = self.pieces
        return pieces[token] if 0 <= token < len(pieces) else ""

    def newline_mask(self, size: int, device: torch.device) -> torch.Tensor:
        """(size,) bool: the token writes a newline (an explanation ends there)."""
        mask = self._newline_masks.get(device)
        if mask is None or mask.shape[0] != size:
            flags = [False] * size
            # SentencePiece vocabularies (Gemma) keep "\n" raw in their pieces, or as the
            # byte token <0x0A>: reading the vocabulary takes milliseconds, decoding
            # every token tens of seconds. Other vocabularies are decoded token by token.
            found = False
            for piece, token in self.tokenizer.get_vocab().items():
                if token < size and token not in self.special_ids and ("\n" in piece or piece == "<0x0A>"):
                    flags[token] = found = True
            if not found:
                for token, piece in enumerate(self.pieces[:size]):
                    flags[token] = "\n" in piece
            mask = torch.tensor(flags, dtype=torch.bool, device=device)
            self._newline_masks[device] = mask
        return mask

    def allowed(self, token: int, text: str, complete: bool, constraint: RegexConstraint) -> bool:
        if token in self.stop_ids:
            return complete
        if token in self.special_ids:
            return False
        piece = self.piece(token)
        # A token that adds no text would let a constrained decoder loop forever.
        return bool(piece) and constraint.can_continue(text + piece)

    def allowed_anywhere(self, text: str, complete: bool, constraint: RegexConstraint) -> list[int]:
        """Every token the constraint allows next. Tokens are grouped by their first
        one and two characters, so only the groups whose prefix can continue the
        match are checked token by token."""
        if self._by_first_char is None:
            groups: dict[str, dict[str, list[int]]] = {}
            for token, piece in enumerate(self.pieces):
                if piece and token not in self.special_ids:
                    groups.setdefault(piece[0], {}).setdefault(piece[:2], []).append(token)
            self._by_first_char = groups
        groups = self._by_first_char
        allowed = [t for t in self.stop_ids if complete]
        # Answer blocks are ASCII except in free text: probe ASCII first, and all
        # ~30k first characters only when non-ASCII text may follow or ASCII found nothing.
        chars: list[str] = [c for c in _ASCII_PROBE if c in groups]
        if any(constraint.can_continue(text + c) for c in _NON_ASCII_PROBE):
            chars = list(groups)
        found = self._tokens_for_chars(chars, text, constraint)
        if not found and len(chars) < len(groups):
            found = self._tokens_for_chars(list(groups), text, constraint)
        return allowed + found

    def _tokens_for_chars(self, chars: list[str], text: str, constraint: RegexConstraint) -> list[int]:
        assert self._by_first_char is not None
        found: list[int] = []
        for char in chars:
            if not constraint.can_continue(text + char):
                continue
            for prefix, tokens in self._by_first_char[char].items():
                if len(prefix) == 1 or constraint.can_continue(text + prefix):
                    found.extend(t for t in tokens if constraint.can_continue(text + self.piece(t)))
        return found


def pick(
    vocabulary: Vocabulary,
    logits: torch.Tensor,
    text: str,
    temperature: float,
    constraint: RegexConstraint | None,
    generator: torch.Generator | None,
) -> int | None:
    """The next token of one row (host side): greedy (temperature 0) or sampled from
    the top 64, under ``constraint``. None means: stop here (the constraint allows nothing else)."""
    if constraint is None and temperature <= 0:
        return int(torch.argmax(logits))
    complete = constraint.is_complete(text) if constraint is not None else True
    top = torch.topk(logits, k=min(64, logits.shape[-1]))
    candidates = top.indices.tolist()
    values = top.values
    if constraint is not None:
        keep = [j for j, token in enumerate(candidates) if vocabulary.allowed(token, text, complete, constraint)]
        if keep:
            candidates = [candidates[j] for j in keep]
            values = values[keep]
        else:
            # The model's favourites are all forbidden: search the whole vocabulary.
            candidates = vocabulary.allowed_anywhere(text, complete, constraint)
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
