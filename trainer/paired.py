"""Two models judged on the same records, compared record by record (pure: no Django, no model).

An evaluation report made with ``keep_outcomes`` carries each record's outcome per task
(``evaluation.report.record_outcomes``). With two such reports over the same records, the F1
difference of every suite (a file or all records, per task; the category micro F1) gets a paired
bootstrap interval: the records are resampled with replacement, the same resample scores both
models, and the 2.5th and 97.5th percentiles of the differences bound it (drawn as a multinomial
over the distinct pairs of outcomes: the same bootstrap, at a cost that does not grow with the
records). A small record set gives a wide interval: one record of a 5-record file moves F1 by
several points, and the interval says so.

The gate (``Difference.regresses``): a suite regresses when its F1 drops by more than the threshold
AND the whole interval lies below zero. A drop inside the interval (the interval reaches zero or
above) could be which records were drawn, not the model: it is reported, not refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

TASKS = ("prompt", "response", "refusal")
CATEGORY_TASK = "micro_f1"
BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95
SEED = 21
# Outcome character -> (tp, fp, fn); "T" is a true negative, "-" not scored.
_COUNTS = {"P": (1, 0, 0), "F": (0, 1, 0), "N": (0, 0, 1), "T": (0, 0, 0)}


@dataclass(frozen=True)
class Difference:
    """One suite's F1 (percent) of both models on the same ``n`` records, the difference and its interval."""

    suite: str  # a file name, "all" or "categories"
    task: str  # a task, or "micro_f1" for the categories
    candidate: float
    baseline: float
    n: int
    low: float
    high: float

    @property
    def delta(self) -> float:
        return round(self.candidate - self.baseline, 2)

    def regresses(self, threshold: float) -> bool:
        return self.delta < -threshold and self.high < 0


def has_outcomes(report: Any) -> bool:
    outcomes = report.get("outcomes") if isinstance(report, dict) else None
    return isinstance(outcomes, dict) and isinstance(outcomes.get("keys"), list) and bool(outcomes.get("fingerprint"))


def same_records(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Both reports carry per-record outcomes over the same records."""
    return has_outcomes(a) and has_outcomes(b) and a["outcomes"]["fingerprint"] == b["outcomes"]["fingerprint"]


def _aligned(candidate: dict[str, Any], baseline: dict[str, Any]) -> tuple[list[str], list[int], list[int]]:
    """The shared record keys and, for each, its index in either report (the same records, any order)."""
    keys_c, keys_b = candidate["outcomes"]["keys"], baseline["outcomes"]["keys"]
    where_b = {key: i for i, key in enumerate(keys_b)}
    keys = [key for key in keys_c if key in where_b]
    return keys, [i for i, key in enumerate(keys_c) if key in where_b], [where_b[key] for key in keys]


def _task_counts(outcomes: dict[str, Any], task: str, order: list[int]) -> np.ndarray:
    codes = (outcomes.get("tasks") or {}).get(task) or ""
    rows = [_COUNTS.get(codes[i], None) if i < len(codes) else None for i in order]
    return np.array([row if row is not None else (-1, -1, -1) for row in rows], dtype=np.int64).reshape(-1, 3)


def _category_counts(outcomes: dict[str, Any], order: list[int]) -> np.ndarray:
    values = outcomes.get("categories") or []
    rows = [values[i] if i < len(values) and values[i] is not None else (-1, -1, -1) for i in order]
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def _f1(counts: np.ndarray) -> np.ndarray:
    """F1 in percent over the last axis (tp, fp, fn) summed; 0 where there is nothing to score."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 200.0 * tp / np.maximum(denominator, 1), 0.0)


def difference(suite: str, task: str, candidate: np.ndarray, baseline: np.ndarray,
               samples: int = BOOTSTRAP_SAMPLES, seed: int = SEED) -> Difference | None:
    """The paired F1 difference over the records both score (rows of (tp, fp, fn); -1 rows are not scored)."""
    scored = (candidate[:, 0] >= 0) & (baseline[:, 0] >= 0)
    c, b = candidate[scored], baseline[scored]
    n = int(scored.sum())
    if n == 0:
        return None
    f1_c, f1_b = float(_f1(c.sum(axis=0))), float(_f1(b.sum(axis=0)))
    # Resampling n records with replacement draws each distinct (candidate, baseline) outcome pair a multinomial
    # number of times: the same bootstrap, computed over the few distinct pairs instead of every record.
    joint, counts = np.unique(np.concatenate([c, b], axis=1), axis=0, return_counts=True)
    draws = np.random.default_rng(seed).multinomial(n, counts / n, size=samples)
    deltas = _f1(draws @ joint[:, :3]) - _f1(draws @ joint[:, 3:])
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(deltas, [tail, 100 - tail])
    return Difference(suite, task, round(f1_c, 2), round(f1_b, 2), n, round(float(low), 2), round(float(high), 2))


def compare(candidate: dict[str, Any], baseline: dict[str, Any], samples: int = BOOTSTRAP_SAMPLES) -> list[Difference]:
    """Every suite's paired difference: all records per task, each file per task, the category micro F1."""
    keys, order_c, order_b = _aligned(candidate, baseline)
    files = [key.split("#", 1)[0] for key in keys]
    out: list[Difference] = []
    suites = [("all", np.ones(len(keys), dtype=bool))]
    if len(set(files)) > 1:
        suites += [(name, np.array([f == name for f in files], dtype=bool)) for name in sorted(set(files))]
    for suite, mask in suites:
        for task in TASKS:
            c = _task_counts(candidate["outcomes"], task, order_c)[mask]
            b = _task_counts(baseline["outcomes"], task, order_b)[mask]
            found = difference(suite, task, c, b, samples)
            if found is not None:
                out.append(found)
    found = difference("categories", CATEGORY_TASK, _category_counts(candidate["outcomes"], order_c),
                       _category_counts(baseline["outcomes"], order_b), samples)
    if found is not None:
        out.append(found)
    return out
