"""The peak reader: a harmful request hidden inside a long ordinary text, found where it sits.

The prompt head reads the mean of a prompt's first and last 96 tokens (``guard.features``). A harmful
request padded with a screen of ordinary text is diluted in that mean, or not read at all when it sits
in the middle: in ``bench/long_texts.py`` the shipped heads caught 5 of 25 held-out harmful requests
placed after 1,200 characters of a harmless answer, 3 of 25 placed between two such stretches.
Reading the whole text with the heads as fitted does not help: they flag stretches of the harmless
filler as often as the hidden request (docs/guard.md, "Long texts").

The peak head is a linear head on the tuned prompt copy's output (``guard.tuned_layers``) averaged over a
short window of tokens, fitted on exactly that contrast (``trainer.peak_fitting``): harmful requests
inside harmless answers (the window over the request, and windows ending or starting with it) against
windows of the answers around them, of harmless answers alone and of long harmless prompts. A prompt
longer than ``min_tokens`` is read whole, up to ``max_tokens``, in one forward of the backbone to the
tuned copy's cut and the copy; its peak is the highest logit over every window of each width. The
threshold is set on validation texts the fit never saw: the 99th percentile of harmless texts' peaks.

It adds to the prompt head and never overrides it: a prompt is harmful when either fires
(``GuardHeads.judge``). Shorter prompts are read whole by the prompt head already and cost nothing more; so
do prompts the features read whole (up to ``guard.features.PROMPT_TOKENS``): that forward lends its states
(``FeatureExtractor.encode``'s ``prompt_states``), and only longer prompts are read a second time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from guard.features import ASSISTANT_MARK, USER_MARK, text_key
from guard.residuals import layer_states

PEAK_WIDTHS = (16, 32)  # tokens per window; a request is 10-40 tokens long
PEAK_MIN_TOKENS = 64  # a prompt this short is read whole by the prompt head
PEAK_MAX_TOKENS = 2048  # the guard prompt's own limit (``GUARD_MAX_INPUT_TOKENS``)
BATCH_TOKENS = 3000  # rows per forward: as many as fit this many (padded) tokens
# A few residual dimensions of Gemma 3 carry activations above float16's range on some tokens; the states are
# kept and projected in float32, and values past this are clipped (as the fit's stored states are).
STATE_LIMIT = 65504.0

Log = Callable[[str], None]


@dataclass
class PeakReading:
    """A text's peak: the logit of its best window and where that window is (token indices of the text)."""

    logit: float
    start: int
    end: int


@dataclass
class PeakHead:
    """A linear head on the tuned copy's mean output over a window of tokens: ``coef``/``bias`` act on the raw
    window mean (the fit's standardisation folded in); a text's peak is its highest window logit."""

    coef: np.ndarray  # (hidden,)
    bias: float
    threshold: float  # on the peak logit
    widths: tuple[int, ...] = PEAK_WIDTHS
    min_tokens: int = PEAK_MIN_TOKENS
    max_tokens: int = PEAK_MAX_TOKENS
    info: dict[str, Any] = field(default_factory=dict)
    # A response peak head's reading: the first this many tokens of the prompt are read before the response, as the
    # conversation runs (0: the response alone); only the response's own windows are scored.
    context_tokens: int = 0

    def window(self, states: np.ndarray) -> PeakReading:
        """The window of one text's (tokens, hidden) states with the highest logit, over every width."""
        per_token = np.clip(states.astype(np.float32), -STATE_LIMIT, STATE_LIMIT) @ self.coef.astype(np.float32)
        best = PeakReading(-np.inf, 0, 0)
        for width in self.widths:
            size = min(width, len(per_token))
            means = np.convolve(per_token, np.ones(size), mode="valid") / size
            first = int(means.argmax())
            if means[first] > best.logit:
                best = PeakReading(float(means[first]), first, first + size)
        best.logit += self.bias
        return best

    def peak(self, states: np.ndarray) -> float:
        """The highest logit over every window of each width of one text's (tokens, hidden) states."""
        return self.window(states).logit

    def meta(self) -> dict[str, Any]:
        return {"bias": self.bias, "threshold": self.threshold, "widths": list(self.widths), "min_tokens": self.min_tokens,
                "max_tokens": self.max_tokens, "info": self.info, "context_tokens": self.context_tokens}

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.coef": self.coef}

    @classmethod
    def restore(cls, meta: dict[str, Any], arrays: Any, prefix: str) -> PeakHead:
        return cls(coef=np.asarray(arrays[f"{prefix}.coef"], dtype=np.float32), bias=float(meta["bias"]),
                   threshold=float(meta["threshold"]), widths=tuple(int(w) for w in meta["widths"]),
                   min_tokens=int(meta["min_tokens"]), max_tokens=int(meta["max_tokens"]), info=dict(meta.get("info", {})),
                   context_tokens=int(meta.get("context_tokens", 0)))


def reading_logits(readings: Sequence[PeakReading | None]) -> np.ndarray:
    """Each reading's peak logit; NaN where a text was not read."""
    return np.array([np.nan if r is None else r.logit for r in readings], dtype=float)


class TokenReader:
    """The tuned copy's output at every token of whole prompts, as the features' rows begin (``<bos>User: ``)."""

    def __init__(self, runner: Any, tokenizer: Any, tuned: Any) -> None:
        self.runner, self.tokenizer, self.tuned = runner, tokenizer, tuned
        self.prefix = [tokenizer.bos_token_id, *tokenizer.encode(USER_MARK, add_special_tokens=False)]
        self.assistant = tokenizer.encode(ASSISTANT_MARK, add_special_tokens=False)

    def token_ids(self, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
        """Each text's tokens, its first ``max_tokens`` (an empty text reads as one end-of-sequence token)."""
        encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
        return [ids[:max_tokens] or [self.tokenizer.eos_token_id] for ids in encoded]

    def states(self, bodies: Sequence[list[int]], log: Log | None = None) -> list[np.ndarray]:
        """(tokens, hidden) float32 states of each token row, in length-sorted batches of ``BATCH_TOKENS`` (the tuned
        copy runs inside ``layer_states``'s inference mode)."""
        out: list[np.ndarray] = [np.zeros((0, 0), dtype=np.float32)] * len(bodies)
        dtype = next(self.tuned.parameters()).dtype
        start = len(self.prefix)

        def keep(batch: list[int], block: torch.Tensor, lengths: torch.Tensor) -> None:
            tuned = self.tuned(block.to(dtype), lengths).float().cpu().numpy()
            for row, i in enumerate(batch):
                out[i] = np.clip(tuned[row, start : int(lengths[row])], -STATE_LIMIT, STATE_LIMIT)

        layer_states(self.runner, [self.prefix + body for body in bodies], self.tuned.cut, keep, max_tokens=BATCH_TOKENS,
                     log=log, what="texts")
        return out

    def read(self, head: PeakHead, texts: Sequence[str], known: Mapping[str, np.ndarray] | None = None
             ) -> list[PeakReading | None]:
        """Each text's peak reading; None for a text of ``head.min_tokens`` tokens or fewer (not read). ``known``: the
        states of texts already read whole, by ``text_key`` (``FeatureExtractor.encode``'s ``prompt_states``), so
        a prompt the features read whole is not read again."""
        out: list[PeakReading | None] = [None] * len(texts)
        ids = self.token_ids(texts, head.max_tokens)
        unread = []
        for i, row in enumerate(ids):
            if len(row) <= head.min_tokens:
                continue
            states = known.get(text_key(texts[i])) if known else None
            if states is not None and len(states) == len(row):
                out[i] = head.window(states)
            else:
                unread.append(i)
        if unread:
            for i, states in zip(unread, self.states([ids[i] for i in unread]), strict=True):
                out[i] = head.window(states)
        return out

    def before_responses(self, prompts: Sequence[str], context_tokens: int) -> list[list[int]]:
        """What a response peak head reads before each response: the prompt's first ``context_tokens`` tokens and the
        assistant's mark, as the conversation runs (nothing where ``context_tokens`` is 0)."""
        if context_tokens <= 0:
            return [[] for _ in prompts]
        return [ids + self.assistant for ids in self.token_ids(prompts, context_tokens)]

    def response_states(self, bodies: Sequence[list[int]], before: Sequence[list[int]], log: Log | None = None
                        ) -> list[np.ndarray]:
        """The states of each response's own tokens (``bodies``), read after ``before`` (``before_responses``)."""
        read = self.states([b + body for b, body in zip(before, bodies, strict=True)], log=log)
        return [states[len(b) :] for states, b in zip(read, before, strict=True)]

    def read_responses(self, head: PeakHead, pairs: Sequence[tuple[str, str]]) -> list[PeakReading | None]:
        """Each (prompt, response)'s reading of the response by a response peak head; None for a response of
        ``head.min_tokens`` tokens or fewer (the features read it whole). Token indices are the response's own."""
        out: list[PeakReading | None] = [None] * len(pairs)
        ids = self.token_ids([response for _, response in pairs], head.max_tokens)
        unread = [i for i, row in enumerate(ids) if len(row) > head.min_tokens]
        if unread:
            before = self.before_responses([pairs[i][0] for i in unread], head.context_tokens)
            for i, states in zip(unread, self.response_states([ids[i] for i in unread], before), strict=True):
                out[i] = head.window(states)
        return out

    def peaks(self, head: PeakHead, texts: Sequence[str], known: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Each text's peak logit; NaN for a text not read (see ``read``)."""
        return reading_logits(self.read(head, texts, known))

    def evidence(self, text: str, reading: PeakReading) -> str:
        """The stretch of ``text`` under the reading's window (the characters of its tokens), for a reviewer."""
        try:
            offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        except (NotImplementedError, TypeError, ValueError, KeyError):  # a slow tokenizer keeps no offsets
            offsets = None
        if offsets and reading.end <= len(offsets):
            return text[offsets[reading.start][0] : offsets[reading.end - 1][1]].strip()
        ids = self.token_ids([text], reading.end)[0]
        return self.tokenizer.decode(ids[reading.start : reading.end]).strip()
