#!/usr/bin/env python
"""Experiment: does the response-harm verdict gain from the prompt and refusal heads' judgement?

A harmful answer is mostly a harmful request that was complied with: the shipped response head reads
the response's and the prompt's taps linearly, so "the prompt is harmful AND the answer complies" is
not a feature it can express. Here a small logistic stacker reads the shipped heads' logits (response,
prompt, refusal) and their interactions; it is fitted on the fit sample's validation rows (the heads
never trained on them), its strength and threshold chosen by 5-fold cross-validation there, then
measured on the held-out sample's response rows, F1 per file at the validation threshold (the heads'
own decision rule, without the policy's coverage rules of ``bench/heads.py``).

    .venv/bin/python bench/response_stack.py [--model models/guardsite-guard-270m] [--data var/data]
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("GUARD_FEATURE_CACHE_IN_SERVING", "1")

from django_setup import ROOT  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import average_precision_score, precision_recall_curve  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

from guard import runtime  # noqa: E402
from trainer.head_data import HeadRecord, fit_sample, heldout_sample  # noqa: E402
from trainer.heads import in_validation  # noqa: E402


def logits(backend: Any, records: list[HeadRecord]) -> dict[str, np.ndarray]:
    heads = backend.heads
    extractor = backend.feature_extractor(cached=True)

    def progress(done: int, total: int) -> None:
        if total and (done == total or done % 512 < 64):
            print(f"  features {done}/{total}", flush=True)

    prompt, response = extractor.encode([r.pair for r in records], progress=progress)
    layout = heads.layout
    out = {"prompt": heads.prompt.logit(heads.prompt.view(layout, prompt, None))}
    for name in ("response", "refusal"):
        head = getattr(heads, name)
        out[name] = head.logit(head.view(layout, prompt, response))
    out["thresholds"] = np.array([heads.prompt.threshold, heads.response.threshold, heads.refusal.threshold])
    return out


def design(scores: dict[str, np.ndarray], variant: str) -> np.ndarray:
    r, p, f = scores["response"], scores["prompt"], scores["refusal"]
    complies = -f
    columns = {
        "response": [r],
        "+prompt": [r, p],
        "+refusal": [r, f],
        "+both": [r, p, f],
        "+both+product": [r, p, f, p * complies, np.maximum(p, 0) * np.maximum(complies, 0)],
    }[variant]
    return np.stack(columns, axis=1)


def best_threshold(y: np.ndarray, probability: np.ndarray) -> tuple[float, float]:
    precision, recall, thresholds = precision_recall_curve(y, probability)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1]))
    return float(thresholds[best]), float(100 * f1[best])


def f1(y: np.ndarray, decided: np.ndarray) -> float:
    tp = int((y & decided).sum())
    fp = int((~y & decided).sum())
    fn = int((y & ~decided).sum())
    return round(200 * tp / max(2 * tp + fp + fn, 1), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "guardsite-guard-270m"))
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "data")
    args = parser.parse_args()

    backend = runtime.get_backend(args.model)
    assert backend.heads is not None and backend.heads.response is not None and backend.heads.refusal is not None

    fit = [r for r in fit_sample(args.data / "train") if r.response is not None and r.response_label in ("safe", "unsafe")]
    validation = [r for r in fit if in_validation(r.id)]
    held = [r for r in heldout_sample(args.data / "heldout") if r.response is not None and r.response_label in ("safe", "unsafe")]
    print(f"validation response rows {len(validation)}, held-out {len(held)}", flush=True)
    val_scores, held_scores = logits(backend, validation), logits(backend, held)
    y_val = np.array([r.response_label == "unsafe" for r in validation])
    y_held = np.array([r.response_label == "unsafe" for r in held])
    files = sorted({r.file for r in held})
    by_file = defaultdict(list)
    for index, record in enumerate(held):
        by_file[record.file].append(index)

    shipped = val_scores["thresholds"][1]
    rows = [("shipped response head", None, 100 * average_precision_score(y_val, val_scores["response"]),
             held_scores["response"] >= np.log(shipped / (1 - shipped)))]
    for variant in ("response", "+prompt", "+refusal", "+both", "+both+product"):
        x_val, x_held = design(val_scores, variant), design(held_scores, variant)
        mean, scale = x_val.mean(0), x_val.std(0) + 1e-6
        x_val, x_held = (x_val - mean) / scale, (x_held - mean) / scale
        best = None
        for strength in (0.01, 0.1, 1.0, 10.0):
            out_of_fold = np.zeros(len(y_val))
            for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(x_val, y_val):
                model = LogisticRegression(C=strength, class_weight="balanced", max_iter=2000).fit(x_val[train], y_val[train])
                out_of_fold[test] = model.predict_proba(x_val[test])[:, 1]
            ap = 100 * average_precision_score(y_val, out_of_fold)
            if best is None or ap > best[0]:
                best = (ap, strength, out_of_fold)
        ap, strength, out_of_fold = best
        threshold, _ = best_threshold(y_val, out_of_fold)
        model = LogisticRegression(C=strength, class_weight="balanced", max_iter=2000).fit(x_val, y_val)
        rows.append((f"stack {variant}", strength, ap, model.predict_proba(x_held)[:, 1] >= threshold))

    header = ["variant", "C", "val AP (CV)", "held-out F1", *[f.removesuffix(".jsonl")[:12] for f in files]]
    print(" | ".join(header))
    for name, strength, ap, decided in rows:
        cells = [name, "" if strength is None else f"{strength:g}", f"{ap:.1f}", f"{f1(y_held, decided):.1f}"]
        cells += [f"{f1(y_held[by_file[f]], decided[by_file[f]]):.1f}" for f in files]
        print(" | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
