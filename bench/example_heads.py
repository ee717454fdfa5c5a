#!/usr/bin/env python
"""Experiment: how well does a category taught by a handful of examples fire, and can the heads do better?

A taught category is read by its example head alone (``guard.zero_shot.example_head``: ridge logistic
regression on the centred unit similarity-layer states, the examples against the corpus background,
firing at ``ZeroShot.taught_threshold`` 0.5). Measured on categories the evaluation never uses (the
custom-category training pool, ``trainer.policy_following.TRAIN_CATEGORIES``, 6-7 texts each):

* recall: each pool text scored by the head taught with the category's other texts (leave one out);
* traffic: how often the head taught with all its texts fires on 600 safe corpus prompts (ToxicChat train,
  AlpacaEval, Self-Instruct; the fit sample's background never sees most of them);
* cross: how often it fires on the other pool categories' texts;
* the same recall at the threshold where traffic fires 0.5% / 1% (does a variant rank better, or only
  move the threshold?).

Variants: the ridge strength, a zero-shot prior (the calibrated cosine logit of the category's
description added to the example head's logit) and a larger background (300 of the traffic prompts
added; those are then left out of the traffic measure).

    .venv/bin/python bench/example_heads.py [--model models/guardsite-guard-270m] [--data var/data/train]
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
from django_setup import ROOT

from guard import runtime
from guard.contract import CategorySpec
from guard.zero_shot import category_text, example_head, sigmoid
from trainer.policy_following import BENIGN_TEXTS, TRAIN_CATEGORIES

TRAFFIC = (("toxicchat_train.jsonl", 400), ("alpaca_eval.jsonl", 100), ("self_instruct_seed.jsonl", 100))


def traffic_texts(data: Path) -> list[str]:
    out: list[str] = []
    for name, count in TRAFFIC:
        rows = [json.loads(line) for line in (data / name).read_text(encoding="utf-8").splitlines() if line.strip()]
        safe = [r["prompt"] for r in rows if r.get("prompt_label") == "safe" and len(r["prompt"]) < 600]
        random.Random(0).shuffle(safe)
        out += safe[:count]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "guardsite-guard-270m"))
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "data" / "train")
    args = parser.parse_args()

    backend = runtime.get_backend(args.model)
    heads = backend.heads
    assert heads is not None, f"{args.model} has no latent heads"
    zs, layout = heads.zero_shot, heads.layout
    traffic = traffic_texts(args.data)
    pool_texts = [t for c in TRAIN_CATEGORIES for t in c.violating]
    descriptions = [category_text(CategorySpec(code="X1", name=c.name, description=c.description), zs.template) for c in TRAIN_CATEGORIES]
    vectors = dict(zip([*pool_texts, *BENIGN_TEXTS, *traffic, *descriptions],
                       backend._vectors([*pool_texts, *BENIGN_TEXTS, *traffic, *descriptions]), strict=True))

    def units(texts: list[str]) -> np.ndarray:
        return zs.text_units(layout.similarity(np.stack([vectors[t] for t in texts])))

    described = {c.key: zs.category_units(layout.similarity(vectors[d][None]))[0] for c, d in zip(TRAIN_CATEGORIES, descriptions, strict=True)}
    order = np.random.default_rng(0).permutation(len(traffic))
    extra, held = units([traffic[i] for i in order[:300]]), units([traffic[i] for i in order[300:]])

    def taught(positives: np.ndarray, key: str, strength: float, prior: float, background: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        head = example_head(positives, np.zeros((0, positives.shape[1]), np.float32), background, strength=strength)
        return lambda u: sigmoid(head.logit(u) + (prior * (zs.weight_cos * (u @ described[key]) + zs.bias) if prior else 0.0))

    def measure(strength: float = 4.0, prior: float = 0.0, larger_background: bool = False) -> list[str]:
        background = np.concatenate([zs.background, extra]) if larger_background else zs.background
        positives, on_traffic, cross = [], [], []
        for category in TRAIN_CATEGORIES:
            texts = list(category.violating)
            for k in range(len(texts)):
                score = taught(units(texts[:k] + texts[k + 1:]), category.key, strength, prior, background)
                positives.append(float(score(units([texts[k]]))[0]))
            score = taught(units(texts), category.key, strength, prior, background)
            on_traffic.append(score(held))
            cross.append(score(units([t for o in TRAIN_CATEGORIES if o is not category for t in o.violating])))
        pos, neg, other = np.array(positives), np.concatenate(on_traffic), np.concatenate(cross)
        row = [f"{100 * (pos >= zs.taught_threshold).mean():.1f}", f"{100 * (neg >= zs.taught_threshold).mean():.2f}",
               f"{100 * (other >= zs.taught_threshold).mean():.1f}"]
        for rate in (0.5, 1.0):
            threshold = float(np.quantile(neg, 1 - rate / 100))
            row.append(f"{100 * (pos >= threshold).mean():.1f} (t={threshold:.2f})")
        return row

    variants = [("shipped: strength 4", {}), ("strength 16", {"strength": 16.0}), ("strength 1", {"strength": 1.0}),
                ("prior 0.5", {"prior": 0.5}), ("prior 1.0", {"prior": 1.0}), ("strength 16, prior 1.0", {"strength": 16.0, "prior": 1.0}),
                ("background +300 traffic", {"larger_background": True}),
                ("background +300, strength 8", {"larger_background": True, "strength": 8.0})]
    print(f"{len(TRAIN_CATEGORIES)} pool categories, {len(pool_texts)} texts; traffic measured on {len(held)} safe prompts\n")
    print("| variant | recall @0.5 | traffic fires @0.5 | cross fires @0.5 | recall @traffic 0.5% | recall @traffic 1% |")
    print("|---|---|---|---|---|---|")
    for name, options in variants:
        print(f"| {name} | " + " | ".join(measure(**options)) + " |")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
