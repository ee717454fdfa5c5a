"""The transformers backend's latent-head path (``guard.heads``): features, policy views, verdicts.

With heads, a fast verdict is one forward over the plain conversation (no policy block, no
answer scoring) and a few matrix products; a reason verdict runs the usual scoring pass
with the heads' labels and codes teacher-forced into the answer block, then generates the
explanation, so the explanation always agrees with the verdict. Without heads the backend
decides with its label logits, and every verdict says which decided (``decided_by``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from guard import contract
from guard.backends.base import setting
from guard.backends.inputs import PreparedItem
from guard.contract import NONE, PolicySpec, Verdict
from guard.features import FeatureExtractor, extractor_for
from guard.heads import GuardHeads, HeadDecision, PolicyView, category_key, load
from guard.peak_reading import PeakReading, TokenReader, reading_logits
from guard.tuned_layers import TunedLayers
from guard.zero_shot import ExampleHead, category_text, example_head

DECIDED_BY_HEADS = "heads"
DECIDED_BY_LOGITS = "logits"
POLICY_VIEWS = 64



class HeadsMixin:
    """Mixed into ``TransformersBackend`` (which provides ``runner``, ``tokenizer``, ``feature_fingerprint``)."""

    heads: GuardHeads | None
    feature_fingerprint: str
    runner: Any
    tokenizer: Any
    model: Any
    device: torch.device
    dtype: torch.dtype

    def _init_heads(self, heads_path: Path | None) -> None:
        self._extractor: FeatureExtractor | None = None
        self._views: OrderedDict[PolicySpec, PolicyView] = OrderedDict()
        self._text_vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._views_lock = threading.Lock()
        self.heads = None
        self.heads_path: Path | None = None
        self._tuned: TunedLayers | None = None
        self._reader: TokenReader | None = None
        self.use_heads(heads_path)

    def use_heads(self, heads_path: Path | None) -> None:
        """Serve with the heads in ``heads_path`` (None: decide with the label logits). Heads fitted
        for other weights raise ``HeadsError`` (a ``GuardError``) and leave the current ones in place."""
        if heads_path == self.heads_path and (heads_path is None or self.heads is not None):
            return
        heads = load(heads_path, self.feature_fingerprint) if heads_path is not None else None
        tuned = None
        if heads is not None and heads.tuned is not None:
            tuned = heads.tuned.module(self.model.get_decoder(), self.device, self.dtype)
        reader = TokenReader(self.runner, self.tokenizer, tuned) if tuned is not None else None
        with self._views_lock:
            self.heads, self.heads_path, self._tuned, self._reader = heads, heads_path, tuned, reader
            self._views.clear()
            self._text_vectors.clear()
            self._extractor = None

    @property
    def decided_by(self) -> str:
        return DECIDED_BY_HEADS if self.heads is not None else DECIDED_BY_LOGITS

    def feature_extractor(self, *, cached: bool | None = None) -> FeatureExtractor:
        """Features of this backend's weights. Serving keeps no texts on disk unless
        ``GUARD_FEATURE_CACHE_IN_SERVING`` is on (benchmarks, evaluations of a fixed corpus)."""
        if cached is None:
            cached = bool(setting("GUARD_FEATURE_CACHE_IN_SERVING", False))
        if self._extractor is None or (self._extractor.store is not None) != cached:
            heads = self.heads
            digest = heads.tuned.digest if heads is not None and heads.tuned is not None else ""
            self._extractor = extractor_for(self, cached=cached, tuned=self._tuned, tuned_digest=digest)
        return self._extractor

    def token_reader(self) -> TokenReader | None:
        """The tuned copy's per-token reader of whole prompts (what a peak head reads), where the heads carry one."""
        return self._reader

    # ----------------------------------------------------------------- policies

    def _vectors(self, texts: list[str]) -> np.ndarray:
        """Prompt vectors of short texts (category descriptions, examples), kept in memory."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_vectors]
        if missing:
            vectors, _ = self.feature_extractor().encode([(t, None) for t in missing])
            for text, vector in zip(missing, vectors, strict=True):
                self._text_vectors[text] = vector
            while len(self._text_vectors) > 4096:
                self._text_vectors.popitem(last=False)
        return np.stack([self._text_vectors[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)

    def policy_view(self, spec: PolicySpec) -> PolicyView:
        """Per category: its trained head, or its zero-shot vector and the head its examples teach."""
        heads = self.heads
        assert heads is not None
        with self._views_lock:
            view = self._views.get(spec)
            if view is not None:
                self._views.move_to_end(spec)
                return view
        trained = [heads.categories.get(category_key(c)) for c in spec.categories]
        hidden = heads.layout.hidden
        units = np.zeros((len(spec.categories), hidden), dtype=np.float32)
        examples: list[ExampleHead | None] = [None] * len(spec.categories)
        borrowed = [False] * len(spec.categories)
        vetoes: list[np.ndarray | None] = [None] * len(spec.categories)
        free = [j for j, head in enumerate(trained) if head is None]
        if free:
            finals = heads.layout.similarity(self._vectors([category_text(spec.categories[j], heads.zero_shot.template) for j in free]))
            units[free] = heads.zero_shot.category_units(finals)
            for j in free:
                category = spec.categories[j]
                taught = [*category.violating_examples, *category.taught_violating]
                near_misses = [*category.allowed_examples, *category.taught_allowed]
                if not taught:
                    trained[j], _ = heads.nearest_head(units[j])
                    borrowed[j] = trained[j] is not None
                else:
                    positive = heads.zero_shot.text_units(heads.layout.similarity(self._vectors(taught)))
                    negative = (
                        heads.zero_shot.text_units(heads.layout.similarity(self._vectors(near_misses)))
                        if near_misses
                        else np.zeros((0, hidden), dtype=np.float32)
                    )
                    examples[j] = example_head(positive, negative, heads.zero_shot.background)
        for j, category in enumerate(spec.categories):
            # Near misses of a category without violating examples (trained, borrowed or zero-shot) veto
            # their rewordings (``guard.zero_shot.NEAR_MISS_COSINE``); with examples, its head learnt them.
            allowed = [*category.allowed_examples, *category.taught_allowed]
            if examples[j] is None and allowed:
                vetoes[j] = heads.zero_shot.text_units(heads.layout.similarity(self._vectors(allowed)))
        known = [category_key(c) in heads.known_categories for c in spec.categories]
        view = PolicyView(spec=spec, heads=trained, units=units, examples=examples, known=known, borrowed=borrowed,
                          near_misses=vetoes)
        with self._views_lock:
            self._views[spec] = view
            while len(self._views) > POLICY_VIEWS:
                self._views.popitem(last=False)
        return view

    # ----------------------------------------------------------------- decisions

    def head_decisions(self, items: list[PreparedItem]) -> list[HeadDecision]:
        """The heads' decision for each item (one feature forward for the batch, then per policy)."""
        heads = self.heads
        assert heads is not None
        pairs = [(item.request.prompt, item.request.response if item.has_response else None) for item in items]
        extractor = self.feature_extractor()
        reading_on = bool(setting("GUARD_PEAK_READING", True))
        reader = self.token_reader() if heads.peak is not None and reading_on else None
        # Long prompts are read whole for a harmful request the features' mean dilutes (``guard.peak_reading``);
        # one the features read whole (up to ``PROMPT_TOKENS``) lends the reader the states of that forward.
        read_whole: dict[str, np.ndarray] | None = {} if reader is not None else None
        prompt, response = extractor.encode(pairs, prompt_states=read_whole)
        clipped = extractor.clipped(pairs)
        peaks = None
        readings: list[PeakReading | None] = [None] * len(items)
        if reader is not None and heads.peak is not None:
            readings = reader.read(heads.peak, [p for p, _ in pairs], known=read_whole)
            peaks = reading_logits(readings)
        # Responses longer than the features read (their middle left out) are read whole the same way, after their prompt.
        response_reader = self.token_reader() if heads.response_peak is not None and reading_on else None
        response_peaks = None
        response_readings: list[PeakReading | None] = [None] * len(items)
        if response_reader is not None and heads.response_peak is not None:
            answered = [i for i, (_, r) in enumerate(pairs) if r is not None]
            read = response_reader.read_responses(heads.response_peak, [(pairs[i][0], pairs[i][1] or "") for i in answered])
            for i, reading in zip(answered, read, strict=True):
                response_readings[i] = reading
            response_peaks = reading_logits(response_readings)
        decisions: list[HeadDecision | None] = [None] * len(items)
        groups: dict[PolicySpec, list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(item.spec, []).append(index)
        for spec, indexes in groups.items():
            view = self.policy_view(spec)
            with_response = [items[i].has_response for i in indexes]
            judged = heads.judge(view, prompt[indexes], response[indexes] if any(with_response) else None, with_response,
                                 peaks[indexes] if peaks is not None else None,
                                 response_peaks[indexes] if response_peaks is not None else None)
            for index, decision in zip(indexes, judged, strict=True):
                decision.clipped = clipped[index]
                reading = readings[index]
                if reader is not None and heads.peak is not None and reading is not None and (
                        reading.logit >= heads.peak.threshold and decision.prompt_label == contract.UNSAFE):
                    # Where in a long prompt the peak head found the request: a reviewer reads that first.
                    decision.evidence = reader.evidence(pairs[index][0], reading)
                found = response_readings[index]
                if response_reader is not None and heads.response_peak is not None and found is not None and (
                        found.logit >= heads.response_peak.threshold and decision.response_label == contract.UNSAFE):
                    decision.response_evidence = response_reader.evidence(pairs[index][1] or "", found)
                decisions[index] = decision
        return [d for d in decisions if d is not None]

    def _fast_by_heads(self, items: list[PreparedItem]) -> list[Verdict]:
        return [self.head_verdict(item, d) for item, d in zip(items, self.head_decisions(items), strict=True)]

    def _reason_by_heads(self, items: list[PreparedItem]) -> list[Verdict]:
        """The heads decide; the answer block is teacher-forced with their labels and codes and
        the explanation generated after it, so it explains the heads' verdict."""
        decisions = self.head_decisions(items)
        explained = self._score(items, explain=True, forced=decisions)  # type: ignore[attr-defined]
        results = []
        for item, decision, verdict in zip(items, decisions, explained, strict=True):
            final = self.head_verdict(item, decision)
            final.explanation = verdict.explanation
            final.mode = "reason"
            final.parse_error = verdict.parse_error
            final.raw_output = contract.format_answer(final, item.has_response) if verdict.parse_error is None else verdict.raw_output
            results.append(final)
        return results

    def _forced_choice(self, decisions: list[HeadDecision], field_name: str) -> torch.Tensor:
        """Index (in ``LABEL_CHOICES`` order, ``none`` left out) of the heads' label per row."""
        choices = [c for c in contract.LABEL_CHOICES[field_name] if c != NONE]
        attribute = {contract.FIELD_PROMPT: "prompt_label", contract.FIELD_RESPONSE: "response_label",
                     contract.FIELD_REFUSAL: "refusal_label"}[field_name]
        picked = [choices.index(getattr(d, attribute)) if getattr(d, attribute) in choices else 0 for d in decisions]
        return torch.tensor(picked, dtype=torch.long).to(self.device, non_blocking=True)

    @staticmethod
    def head_verdict(item: PreparedItem, decision: HeadDecision) -> Verdict:
        """A fast verdict from the heads (``probabilities`` holds theirs; ``categories`` every code's score)."""
        probabilities: dict[str, dict[str, float]] = {
            contract.FIELD_PROMPT: {contract.UNSAFE: round(decision.prompt_unsafe, 6), contract.SAFE: round(1 - decision.prompt_unsafe, 6)}
        }
        if item.has_response and decision.response_unsafe is not None:
            probabilities[contract.FIELD_RESPONSE] = {
                contract.UNSAFE: round(decision.response_unsafe, 6), contract.SAFE: round(1 - decision.response_unsafe, 6)
            }
        if item.has_response and decision.refusal is not None:
            probabilities[contract.FIELD_REFUSAL] = {
                contract.REFUSAL: round(decision.refusal, 6), contract.COMPLIANCE: round(1 - decision.refusal, 6)
            }
        probabilities[contract.FIELD_CATEGORIES] = {score.code: score.probability for score in decision.scores}
        primary = decision.response_unsafe if item.has_response and decision.response_unsafe is not None else decision.prompt_unsafe
        verdict = Verdict(
            prompt_label=decision.prompt_label,
            response_label=(decision.response_label or contract.SAFE) if item.has_response else None,
            refusal_label=(decision.refusal_label or contract.COMPLIANCE) if item.has_response else None,
            categories=list(decision.categories),
            confidence=round(float(primary), 6),
            probabilities=probabilities,
            truncated=item.truncated or decision.clipped,
            mode="fast",
            decided_by=DECIDED_BY_HEADS,
            evidence=decision.evidence,
            response_evidence=decision.response_evidence,
        )
        verdict.raw_output = contract.format_answer(verdict, item.has_response)
        return verdict

