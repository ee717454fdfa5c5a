"""Free generation on the transformers backend: batched greedy decoding on the
device (explanations, free answers, ``guard_serve`` at temperature 0) and
host-side token choice for sampling, regex constraints and stop strings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from guard import contract
from guard.backends.base import GuardError
from guard.backends.batching import MIN_SHARED_PREFIX
from guard.backends.decoding import RegexConstraint, Vocabulary, pick
from guard.backends.gemma_runner import GemmaRunner, RowCache
from guard.backends.inputs import PreparedItem
from guard.contract import Verdict

# Tokens allowed for the label lines of a freely generated (unconstrained) answer.
LABEL_LINES_TOKENS = 48
# Greedy decoding checks for finished rows (a host sync) this often.
FINISHED_CHECK_EVERY = 8


@dataclass
class Generation:
    """One generated completion (also what ``guard_serve`` returns)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"


class GenerationMixin:
    """Generation of ``TransformersBackend`` (uses its runner, vocabulary, batch start and chunk feeding)."""

    runner: GemmaRunner
    tokenizer: Any
    vocabulary: Vocabulary
    device: torch.device
    pad_id: int
    newline_id: int
    stop_ids: set[int]
    max_new_tokens: int
    model: Any
    _lock: Any
    _stop_tensor: torch.Tensor

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
        heads = [self._head_length(text, ids) for text, ids in zip(texts, inputs, strict=True)]
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, (ids, n) in enumerate(zip(inputs, heads, strict=True)):
            groups.setdefault(tuple(ids[:n]) if n >= MIN_SHARED_PREFIX else (), []).append(index)
        results: list[Generation | None] = [None] * len(texts)
        with self._lock, torch.inference_mode():
            for indices in groups.values():
                indices.sort(key=lambda i: len(inputs[i]))  # length buckets need sorted rows
                rows = [inputs[i] for i in indices]
                cache, last = self._start(rows, [heads[i] for i in indices], reserve=max_new_tokens)
                if constraint is None and temperature <= 0 and not any(stop):
                    tokens, reasons = self._greedy(cache, last, max_new_tokens=max_new_tokens, stop_at_newline=False)
                    outs = [(self.tokenizer.decode(t, skip_special_tokens=True), len(t), r) for t, r in zip(tokens, reasons, strict=True)]
                else:
                    outs = self._decode_on_host(
                        cache, last, max_new_tokens=max_new_tokens, temperature=temperature,
                        constraint=constraint, generator=generator, stop=stop,
                    )
                for i, (text, count, reason) in zip(indices, outs, strict=True):
                    results[i] = Generation(text, len(inputs[i]), count, reason)
        return [r for r in results if r is not None]

    # ----------------------------------------------------------------- generation

    def _greedy(
        self, cache: RowCache, last: torch.Tensor, *, max_new_tokens: int, stop_at_newline: bool
    ) -> tuple[list[list[int]], list[str]]:
        """Greedy decoding of every row on the device: one argmax per step for the
        batch, stops detected on token ids, finished rows dropped every
        ``FINISHED_CHECK_EVERY`` steps. Returns each row's tokens (a stop token
        excluded, a newline-writing token included) and finish reasons."""
        batch = last.shape[0]
        device = self.device
        out = torch.full((batch, max(1, max_new_tokens)), self.pad_id, dtype=torch.long, device=device)
        count = torch.zeros(batch, dtype=torch.long, device=device)
        stopped = torch.zeros(batch, dtype=torch.bool, device=device)  # by a stop token or newline
        rows = torch.arange(batch, device=device)
        newline = self.vocabulary.newline_mask(self.runner.lm_head.shape[0], device) if stop_at_newline else None
        banned = sorted({*self.stop_ids, self.newline_id}) if stop_at_newline else []
        for step in range(max_new_tokens):
            # An explanation has at least one token (the answer regex demands it).
            token = self.runner.greedy(last, banned if step == 0 else None)
            is_stop = torch.isin(token, self._stop_tensor)
            alive = ~stopped[rows]
            write = alive & ~is_stop
            out[rows, step] = torch.where(write, token, out[rows, step])
            count[rows] += write.long()
            finished = is_stop if newline is None else is_stop | newline[token]
            stopped[rows] |= alive & finished
            if step == max_new_tokens - 1:
                break
            if (step + 1) % FINISHED_CHECK_EVERY == 0:
                keep = ~stopped[rows]
                remaining = int(keep.sum())  # host sync, every few steps only
                if remaining == 0:
                    break
                if remaining <= 0.75 * rows.shape[0]:
                    kept = keep.nonzero().squeeze(1)
                    cache.keep_rows(kept)
                    rows, token = rows[kept], token[kept]
            last = self.runner.forward(cache, token[:, None])[:, 0]
        tokens_host, counts, ended = out.tolist(), count.tolist(), stopped.tolist()
        tokens = [row[:n] for row, n in zip(tokens_host, counts, strict=True)]
        return tokens, ["stop" if done else "length" for done in ended]

    def _decode_on_host(
        self,
        cache: RowCache,
        last: torch.Tensor,
        *,
        max_new_tokens: int,
        temperature: float,
        constraint: RegexConstraint | None,
        generator: torch.Generator | None,
        stop: Sequence[str],
    ) -> list[tuple[str, int, str]]:
        """Sampling, regex constraints and stop strings: each row's token is chosen on the
        host (``decoding.pick``). Returns (text, token count, finish reason) per row."""
        batch = last.shape[0]
        tokens: list[list[int]] = [[] for _ in range(batch)]
        texts = [""] * batch
        reasons = ["length"] * batch
        active = [True] * batch
        for step in range(max_new_tokens):
            logits = self.runner.logits(last).cpu()
            chosen = [self.pad_id] * batch
            fed = [0] * batch
            for row in range(batch):
                if not active[row]:
                    continue
                token = pick(self.vocabulary, logits[row], texts[row], temperature, constraint, generator)
                if token is None or token in self.stop_ids:
                    active[row] = False
                    reasons[row] = "stop"
                    continue
                tokens[row].append(token)
                text = self.tokenizer.decode(tokens[row], skip_special_tokens=True)
                for marker in stop:
                    if marker and marker in text:
                        text = text.split(marker, 1)[0]
                        active[row] = False
                        reasons[row] = "stop"
                texts[row] = text
                if active[row]:
                    chosen[row], fed[row] = token, 1
            if not any(active) or step == max_new_tokens - 1:
                break
            ids = torch.tensor(chosen, dtype=torch.long, device=self.device)[:, None]
            lengths = torch.tensor(fed, dtype=torch.long, device=self.device)
            last = self._last(self.runner.forward(cache, ids, lengths), lengths.clamp(min=1))
        return [(text, len(t), reason) for text, t, reason in zip(texts, tokens, reasons, strict=True)]

    # ----------------------------------------------------------------- free answers

    def _explain(
        self,
        cache: RowCache,
        items: list[PreparedItem],
        verdicts: list[Verdict],
        labels: list[dict[str, str]],
        codes: list[list[str]],
    ) -> list[Verdict]:
        chunks = [
            self._between(contract.FIELD_CATEGORIES, contract.FIELD_EXPLANATION, {}, row_codes) for row_codes in codes
        ]
        table = self._chunk_table(chunks)
        variant = torch.arange(len(chunks), device=self.device)
        last = self._feed(cache, table, variant)
        tokens, _ = self._greedy(cache, last, max_new_tokens=self.max_new_tokens, stop_at_newline=True)
        explanations = [self.tokenizer.decode(t, skip_special_tokens=True).split("\n", 1)[0] for t in tokens]
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

    def _generate_answers(self, items: list[PreparedItem]) -> list[Verdict]:
        cache, last = self._start(
            [item.input_ids for item in items], [item.head_len for item in items], self.max_new_tokens + LABEL_LINES_TOKENS
        )
        tokens, _ = self._greedy(cache, last, max_new_tokens=self.max_new_tokens + LABEL_LINES_TOKENS, stop_at_newline=False)
        verdicts = []
        for item, ids in zip(items, tokens, strict=True):
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
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
