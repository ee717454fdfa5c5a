"""Side-by-side comparison of two reports (model A vs model B): rows for tables and charts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evaluation.metrics import TASKS

# The category chart shows the categories with the most gold support.
MAX_CHART_CATEGORIES = 20


@dataclass(frozen=True)
class Row:
    label: str
    a: float | None
    b: float | None
    n_a: int
    n_b: int

    @property
    def delta(self) -> float | None:
        if self.a is None or self.b is None:
            return None
        return round(self.b - self.a, 2)


def _scored(entry: dict[str, Any] | None) -> tuple[float | None, int]:
    """(F1, n) of one task entry; F1 None where the task had no records (n = 0)."""
    if not entry or not entry.get("n"):
        return None, 0
    return entry.get("f1"), entry["n"]


def task_rows(a: dict[str, Any], b: dict[str, Any]) -> list[Row]:
    rows = []
    for task in TASKS:
        fa, na = _scored(a.get("tasks", {}).get(task))
        fb, nb = _scored(b.get("tasks", {}).get(task))
        if na or nb:
            rows.append(Row(task, fa, fb, na, nb))
    return rows


def file_rows(a: dict[str, Any], b: dict[str, Any]) -> dict[str, list[Row]]:
    """task -> one row per file (files of either report), skipping tasks no file has."""
    files = sorted(set(a.get("files", {})) | set(b.get("files", {})))
    out: dict[str, list[Row]] = {}
    for task in TASKS:
        rows = []
        for name in files:
            fa, na = _scored(a.get("files", {}).get(name, {}).get(task))
            fb, nb = _scored(b.get("files", {}).get(name, {}).get(task))
            if na or nb:
                rows.append(Row(name, fa, fb, na, nb))
        if rows:
            out[task] = rows
    return out


def category_rows(a: dict[str, Any], b: dict[str, Any]) -> list[Row]:
    """Per category, most gold support first; a category missing from one report scores None there."""
    per_a = a.get("categories", {}).get("per_category", {})
    per_b = b.get("categories", {}).get("per_category", {})
    rows = []
    for key in set(per_a) | set(per_b):
        ea, eb = per_a.get(key), per_b.get(key)
        rows.append(Row(key, ea["f1"] if ea else None, eb["f1"] if eb else None, ea["n"] if ea else 0, eb["n"] if eb else 0))
    rows.sort(key=lambda r: (-max(r.n_a, r.n_b), r.label))
    return rows


def headline_rows(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    ca, cb = a.get("categories", {}), b.get("categories", {})
    wa, wb = a.get("words_per_explanation", {}), b.get("words_per_explanation", {})
    fa, fb = a.get("policy_following") or {}, b.get("policy_following") or {}
    return [
        ("records", a.get("n"), b.get("n")),
        ("items per second", a.get("items_per_second"), b.get("items_per_second")),
        ("words per explanation (mean)", wa.get("mean"), wb.get("mean")),
        ("words per explanation (p90)", wa.get("p90"), wb.get("p90")),
        ("category micro F1", ca.get("micro_f1"), cb.get("micro_f1")),
        ("category macro F1", ca.get("macro_f1"), cb.get("macro_f1")),
        ("parse failures", a.get("parse_failures"), b.get("parse_failures")),
        ("policy-following pairs right (%)", fa.get("pair_accuracy"), fb.get("pair_accuracy")),
        ("policy following: right code (%)", fa.get("code_accuracy"), fb.get("code_accuracy")),
    ]
