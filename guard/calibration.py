"""Calibration of a guard model: how its label probabilities become labels.

A small guard ranks well before it decides well: the shipped 270M adapter put
unsafe prompts above safe ones (AUROC 86 on the held-out prompts) while its
P(unsafe) rarely reached 0.5, so the argmax rule called almost everything
safe. Calibration fixes the decision without touching the weights:

* ``temperature`` divides the label logits (softer or sharper probabilities);
* ``thresholds[field]`` is the probability of the field's *positive* label
  (``unsafe`` for prompt/response, ``refusal`` for refusal) at which that
  label is chosen. A field without a threshold keeps the argmax (0.5).

Both are fitted by ``manage.py calibrate`` on labelled records that were
neither trained on nor held out for evaluation. The fields are fitted in
answer order (prompt, response, refusal), each under the thresholds already
fitted: a later field is scored after the earlier labels are written, so its
probabilities depend on them. The fit is stored with the model: in
``calibration.json`` inside a model/adapter directory, or in
``ModelVersion.metrics["calibration"]`` for a registered version. The
transformers backend applies them in its one scoring pass, so fast and reason
modes keep the same labels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guard import contract

CALIBRATION_FILE = "calibration.json"
# The label a threshold is about, per answer field.
POSITIVE_LABEL = {
    contract.FIELD_PROMPT: contract.UNSAFE,
    contract.FIELD_RESPONSE: contract.UNSAFE,
    contract.FIELD_REFUSAL: contract.REFUSAL,
}
TEMPERATURE_GRID = tuple(round(0.25 * step, 2) for step in range(1, 25))  # 0.25 .. 6.0


@dataclass(frozen=True)
class Calibration:
    temperature: float | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> Calibration:
        """From a stored ``{"temperature": ..., "thresholds": {...}}``; anything malformed is ignored."""
        if not isinstance(data, Mapping):
            return cls()
        temperature: float | None
        try:
            temperature = float(data["temperature"])
        except (KeyError, TypeError, ValueError):
            temperature = None
        if temperature is not None and not (temperature > 0 and math.isfinite(temperature)):
            temperature = None
        thresholds: dict[str, float] = {}
        raw = data.get("thresholds")
        if isinstance(raw, Mapping):
            for name, value in raw.items():
                if name in POSITIVE_LABEL and isinstance(value, int | float) and 0.0 < float(value) < 1.0:
                    thresholds[name] = float(value)
        return cls(temperature=temperature, thresholds=thresholds)

    def to_json(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "thresholds": dict(self.thresholds)}

    def choose(self, field_name: str, distribution: Mapping[str, float]) -> str:
        """The label of ``field_name`` given its (temperature-scaled) distribution."""
        return choose_label(self.thresholds, field_name, distribution)


def choose_label(thresholds: Mapping[str, float], field_name: str, distribution: Mapping[str, float]) -> str:
    """The argmax of ``distribution``, unless ``thresholds`` has one for the field: then the
    positive label as soon as its probability reaches it (the backend's per-row decision)."""
    threshold = thresholds.get(field_name)
    positive = POSITIVE_LABEL.get(field_name)
    if threshold is None or positive not in distribution:
        return max(distribution, key=distribution.__getitem__)
    if distribution[positive] >= threshold:
        return positive
    others = {label: p for label, p in distribution.items() if label != positive}
    return max(others, key=others.__getitem__)


def read_directory(path: Path | None) -> Calibration:
    """The calibration stored in a model or adapter directory (none: the identity)."""
    if path is None:
        return Calibration()
    try:
        return Calibration.from_json(json.loads((path / CALIBRATION_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return Calibration()


def of_version(metrics: Any, adapter_path: Path | None) -> Calibration:
    """A registered version's calibration: its own (``metrics["calibration"]``), else its adapter's file."""
    stored = metrics.get("calibration") if isinstance(metrics, Mapping) else None
    if stored is not None:
        return Calibration.from_json(stored)
    return read_directory(adapter_path)


@dataclass(frozen=True)
class FieldDecision:
    """How one answer field's label was decided, for display:
    "prompt: P(unsafe) 0.508, threshold 0.757 -> safe"."""

    field: str
    positive: str
    probability: float
    threshold: float | None
    label: str

    @property
    def text(self) -> str:
        rule = f"threshold {self.threshold:.3f}" if self.threshold is not None else "no threshold: most probable label"
        return f"P({self.positive}) {self.probability:.3f}, {rule} \u2192 {self.label}"


def field_decisions(
    probabilities: Mapping[str, Mapping[str, float]] | None,
    thresholds: Mapping[str, float] | None,
    labels: Mapping[str, str | None],
) -> list[FieldDecision]:
    """Each labelled field with the probability of its positive label and the threshold
    (if any) that decided it, in answer order; fields without a probability are left out."""
    rows = []
    for name, positive in POSITIVE_LABEL.items():
        distribution = (probabilities or {}).get(name) or {}
        label = labels.get(name)
        if label is None or positive not in distribution:
            continue
        threshold = (thresholds or {}).get(name)
        rows.append(FieldDecision(name, positive, float(distribution[positive]), None if threshold is None else float(threshold), label))
    return rows


# ------------------------------------------------------------------ fitting


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _log_odds(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def rescale(p: float, temperature: float) -> float:
    """P(positive) of a two-way softmax whose logits are divided by ``temperature``."""
    return _sigmoid(_log_odds(p) / temperature)


def fit_temperature(scores: Sequence[float], positives: Sequence[bool], grid: Sequence[float] = TEMPERATURE_GRID) -> float:
    """The temperature (from ``grid``) with the lowest log-loss; 1.0 without data."""
    if not scores:
        return 1.0

    def log_loss(temperature: float) -> float:
        total = 0.0
        for score, positive in zip(scores, positives, strict=True):
            p = min(max(rescale(score, temperature), 1e-12), 1 - 1e-12)
            total -= math.log(p if positive else 1 - p)
        return total / len(scores)

    return min(grid, key=lambda t: (log_loss(t), abs(t - 1.0)))


def f1_at(scores: Sequence[float], positives: Sequence[bool], threshold: float) -> float:
    tp = sum(1 for s, g in zip(scores, positives, strict=True) if g and s >= threshold)
    fp = sum(1 for s, g in zip(scores, positives, strict=True) if not g and s >= threshold)
    fn = sum(1 for s, g in zip(scores, positives, strict=True) if g and s < threshold)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def best_threshold(scores: Sequence[float], positives: Sequence[bool]) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of "positive when score >= threshold".

    Candidates are the midpoints between consecutive distinct scores (in log-odds,
    so a threshold generalises between two tightly packed scores rather than
    sitting on one); ties prefer the threshold nearest 0.5.
    """
    distinct = sorted(set(scores))
    candidates = [0.5]
    for low, high in zip(distinct, distinct[1:], strict=False):
        candidates.append(_sigmoid((_log_odds(low) + _log_odds(high)) / 2))
    best = max(candidates, key=lambda t: (f1_at(scores, positives, t), -abs(_log_odds(t))))
    return best, f1_at(scores, positives, best)


def pooled_temperature(scores: Mapping[str, Sequence[Sequence[Any]]]) -> float | None:
    """The log-loss temperature over every field's ``[P(positive), gold]`` pairs (None: 1.0, no change)."""
    pooled = [(float(score), bool(gold)) for name, pairs in scores.items() if name in POSITIVE_LABEL for score, gold in pairs]
    temperature = fit_temperature([s for s, _ in pooled], [g for _, g in pooled])
    return None if temperature == 1.0 else temperature


def fit_threshold(pairs: Sequence[Sequence[Any]], *, min_per_class: int = 10) -> tuple[float | None, dict[str, Any]]:
    """The F1-maximising threshold of one field's ``[P(positive), gold]`` pairs, with a summary
    (records, positives, F1 at 0.5 and at the threshold); None when either class has fewer
    than ``min_per_class`` records (the field keeps the argmax)."""
    probabilities = [float(score) for score, _ in pairs]
    golds = [bool(gold) for _, gold in pairs]
    positives = sum(golds)
    entry: dict[str, Any] = {"n": len(pairs), "positives": positives, "f1_at_half": round(100 * f1_at(probabilities, golds, 0.5), 2)}
    if positives < min_per_class or len(pairs) - positives < min_per_class:
        entry.update(threshold=None, why_not=f"fewer than {min_per_class} positive or negative records")
        return None, entry
    threshold, f1 = best_threshold(probabilities, golds)
    entry.update(threshold=round(threshold, 6), f1_at_threshold=round(100 * f1, 2))
    return round(threshold, 6), entry
