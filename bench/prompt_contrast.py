#!/usr/bin/env python
"""Does the prompt head learn intent from more contrast prompts? The shipped tuned copy, its linear head fitted again.

    .venv/bin/python bench/prompt_contrast.py [--model models/guardsite-guard-270m] [--extra-files coconot jbb_behaviors]

The shipped prompt head is a linear head on the mean output of a tuned copy of layers 12-14 (``guard.layer_tuning``).
It reads topic more than intent: held-out JBB behaviours' misses are benign twins of harmful behaviours, flagged
("Explain how to dispose of hazardous medical waste"), and the fit sample drew only 173 of CoCoNot's 1,912 safe
prompts (1,039 of them contrast sets: benign requests worded like harmful ones). This keeps the copy as it is and
fits the linear head again (logistic regression, balanced, the strength by validation AP, as the soup's refit does)
on the fit sample's training prompts plus every training-split prompt of ``--extra-files`` not yet in the fit
sample (the validation prompts are untouched, so the variants' validation AP compare). Each variant is thresholded
at its validation F1 maximum and measured on the held-out sample's distinct prompts: F1 per file, prompt head alone.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from django_setup import ROOT

from evaluation.metrics import f1_from_counts
from guard import runtime
from guard.features import FeatureExtractor, text_key
from guard.head_fitting import average_precision, best_threshold
from guard.layer_tuning import SOUP_STRENGTHS, pooled, prompt_residuals
from trainer.head_data import HeadRecord, fit_sample, heldout_sample, read_records
from trainer.heads import in_validation


def distinct(records: list[HeadRecord]) -> list[HeadRecord]:
    first: dict[str, HeadRecord] = {}
    for record in records:
        if record.prompt_label in ("safe", "unsafe"):
            first.setdefault(record.prompt, record)
    return list(first.values())


def f1(predicted: np.ndarray, gold: np.ndarray) -> float:
    return f1_from_counts(int((predicted & gold).sum()), int((predicted & ~gold).sum()), int((~predicted & gold).sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "guardsite-guard-270m"))
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "data")
    parser.add_argument("--extra-files", nargs="+", default=["coconot", "jbb_behaviors"])
    parser.add_argument("--extra-weights", type=float, nargs="+", default=[1.0], help="the extras' sample weight, one variant each")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "bench" / "prompt_contrast")
    parser.add_argument("--extra-label", choices=["safe", "unsafe", "both"], default="safe",
                        help="which of the extra files' prompts to add")
    args = parser.parse_args()
    backend = runtime.get_backend(args.model)
    heads = backend.heads
    if heads is None or heads.tuned is None:
        raise SystemExit(f"{args.model}: its heads carry no tuned layers")
    fit = distinct(fit_sample(args.data / "train"))
    fit_prompts = {r.prompt for r in fit}
    seen = set(fit_prompts)  # and the extras taken, so none is taken twice
    extras: list[HeadRecord] = []
    for name in args.extra_files:
        for record in distinct(read_records(args.data / "train" / f"{name}.jsonl")):
            if record.prompt not in seen and args.extra_label in ("both", record.prompt_label) and not in_validation(record.id):
                seen.add(record.prompt)
                extras.append(record)
    held = [r for r in distinct(heldout_sample(args.data / "heldout")) if r.prompt not in fit_prompts]
    texts = [r.prompt for r in fit] + [r.prompt for r in extras] + [r.prompt for r in held]
    print(f"fit sample {len(fit)} distinct prompts, extras {len(extras)} ({', '.join(args.extra_files)}, {args.extra_label}), "
          f"held-out {len(held)}", flush=True)
    started = time.perf_counter()
    # The copy's means, kept between runs (keyed by the weights and the text), so another set of extras costs only
    # its own prompts' forwards.
    store = args.cache / f"{heads.tuned.digest[:16]}.npz"
    known: dict[str, np.ndarray] = {}
    if store.is_file():
        with np.load(store) as saved:
            known = dict(zip(saved["keys"].tolist(), saved["means"], strict=True))
    missing = sorted({t for t in texts if text_key(t) not in known})
    if missing:
        extractor = FeatureExtractor(backend.runner, backend.tokenizer)
        decoder = backend.model.get_decoder()
        residuals = prompt_residuals(extractor, missing, heads.tuned.cut, log=print)
        fresh = pooled(residuals, list(range(len(missing))), heads.tuned.module(decoder))
        known.update({text_key(t): m for t, m in zip(missing, fresh, strict=True)})
        store.parent.mkdir(parents=True, exist_ok=True)
        np.savez(store, keys=np.array(list(known)), means=np.stack(list(known.values())))
    means = np.stack([known[text_key(t)] for t in texts])
    print(f"layer states and the copy's means of {len(missing)} new prompts: {time.perf_counter() - started:.0f} s", flush=True)
    n_fit, n_extra = len(fit), len(extras)
    fit_means, extra_means, held_means = means[:n_fit], means[n_fit : n_fit + n_extra], means[n_fit + n_extra :]
    y_fit = np.array([r.prompt_label == "unsafe" for r in fit])
    in_val = np.array([in_validation(r.id) for r in fit])
    y_extra = np.array([r.prompt_label == "unsafe" for r in extras])
    y_held = np.array([r.prompt_label == "unsafe" for r in held])
    files = sorted({r.file for r in held})

    # The shipped head (as served: calibrated, its own threshold) and the refits.
    variants: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    # Logits throughout: a refitted head's run to +-40, where float32 probabilities tie at 1 (the soup's Platt step).
    threshold_logit = float(np.log(heads.prompt.threshold / (1 - heads.prompt.threshold)))
    variants["shipped"] = (heads.prompt.logit(fit_means[in_val]), heads.prompt.logit(held_means), threshold_logit)
    from sklearn.linear_model import LogisticRegression

    fitted = [("refit, fit sample", fit_means[~in_val], y_fit[~in_val], None)]
    for weight in args.extra_weights:
        fitted.append((f"+ extras x{weight}", np.concatenate([fit_means[~in_val], extra_means]), np.concatenate([y_fit[~in_val], y_extra]),
                       np.concatenate([np.ones((~in_val).sum()), np.full(len(extras), weight)])))
    for label, x, y, sample_weight in fitted:
        mean, scale = x.mean(0), x.std(0) + 1e-3
        trials = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for strength in SOUP_STRENGTHS:
                model = LogisticRegression(C=strength, class_weight="balanced", max_iter=3000).fit((x - mean) / scale, y, sample_weight=sample_weight)
                val = model.decision_function((fit_means[in_val] - mean) / scale)
                trials.append((average_precision(val, y_fit[in_val]), strength, model, val))
        ap, strength, model, val_logits = max(trials, key=lambda t: t[0])
        threshold, _ = best_threshold(val_logits, y_fit[in_val])
        variants[f"{label} (C={strength})"] = (val_logits, model.decision_function((held_means - mean) / scale), threshold)
        print(f"{label}: validation AP by strength " + ", ".join(f"{t[1]}: {100 * t[0]:.2f}" for t in trials), flush=True)

    names = list(variants)
    print()
    print(f"{'':35}" + "".join(f"{n[:25]:>26}" for n in names))
    val_gold = y_fit[in_val]
    print(f"{'validation AP / F1 @ threshold':35}" + "".join(
        f"{100 * average_precision(v[0], val_gold):>18.2f} / {f1(v[0] >= v[2], val_gold):5.1f}" for v in variants.values()))
    by_file: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(held):
        by_file[record.file].append(index)
    for name in files + ["ALL"]:
        rows = np.arange(len(held)) if name == "ALL" else np.array(by_file[name])
        gold = y_held[rows]
        cells = []
        for _val_p, held_p, threshold in variants.values():
            cells.append(f"{f1(held_p[rows] >= threshold, gold):>18.1f} / {100 * average_precision(held_p[rows], gold):5.1f}")
        print(f"{name[:26]:26} {len(rows):>5} {int(gold.sum()):>2}" + "".join(cells))
    print("(held-out cells: F1 at the variant's validation threshold / AP)")


if __name__ == "__main__":
    main()
