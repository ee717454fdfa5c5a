#!/usr/bin/env python
"""How small can the tuned layers ship? The tuned copy's change from the served layers, cut to rank r by SVD.

    .venv/bin/python bench/tuned_rank.py [--model models/guardsite-guard-270m] [--ranks 128 64 32 16]

The shipped prompt head reads a copy of layers 12-14 tuned on a CPU (``guard.layer_tuning``), stored whole in
float16. Its change from the served layers may be nearly low-rank, as LoRA assumes: every weight matrix's
delta is cut to its top ``r`` singular directions (``TunedWeights.low_rank``; the norms' vectors kept whole), and the prompt
head, unchanged, scores the validation prompts of the fit (the split that chose its epoch and threshold).
Prints validation AP, F1 at the head's own threshold, and the float16 size the cut weights would take.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from django_setup import ROOT

from guard import runtime
from guard.features import FeatureExtractor
from guard.head_fitting import average_precision
from guard.layer_tuning import pooled, prompt_residuals
from guard.zero_shot import sigmoid
from trainer.head_data import fit_sample
from trainer.heads import in_validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "guardsite-guard-270m"))
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "data" / "train")
    parser.add_argument("--ranks", type=int, nargs="+", default=[128, 64, 32, 16])
    args = parser.parse_args()
    backend = runtime.get_backend(args.model)
    heads = backend.heads
    if heads is None or heads.tuned is None:
        raise SystemExit(f"{args.model}: its heads carry no tuned layers")
    first: dict[str, object] = {}
    for record in fit_sample(args.data):
        if record.prompt_label in ("safe", "unsafe"):
            first.setdefault(record.prompt, record)
    val = [record for record in first.values() if in_validation(record.id)]  # type: ignore[attr-defined]
    gold = np.array([record.prompt_label == "unsafe" for record in val])  # type: ignore[attr-defined]
    extractor = FeatureExtractor(backend.runner, backend.tokenizer)
    residuals = prompt_residuals(extractor, [record.prompt for record in val], heads.tuned.cut)  # type: ignore[attr-defined]
    decoder = backend.model.get_decoder()
    head = heads.prompt
    print(f"{'rank':>7} {'float16 MB':>10} {'val AP':>7} {'F1 @ threshold':>14}   ({len(val)} validation prompts)")
    # None: as shipped (whole, or at the rank it was cut to); otherwise cut from what shipped.
    for rank in [None, *args.ranks]:
        weights = heads.tuned if rank is None else heads.tuned.low_rank(decoder, rank)
        size = weights.nbytes
        means = pooled(residuals, list(range(len(val))), weights.module(decoder))
        probability = sigmoid(head.logit(means))
        predicted = probability >= head.threshold
        f1 = 200 * float((predicted & gold).sum()) / max(float(predicted.sum() + gold.sum()), 1.0)
        print(f"{'shipped' if rank is None else rank:>7} {size / 1e6:10.1f} {100 * average_precision(probability, gold):7.1f} {f1:14.1f}",
              flush=True)


if __name__ == "__main__":
    main()
