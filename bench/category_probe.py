#!/usr/bin/env python
"""Does a cross probe read custom categories better than the zero-shot cosine? Measured: no.

    .venv/bin/python scripts/build_guard_data.py --out var/data        # once: the splits
    .venv/bin/python bench/category_probe.py [--model models/guardsite-guard-270m] [--limit N]

The zero-shot score embeds a text and a category's "name: description" apart and compares them. A cross
probe (NLI-style zero-shot classification) reads them together: one forward over

    <bos>Category: {name}: {description}
    Message: {text}
    Question: Does the message fall under the category? Answer:

and a logistic head on the states (the last token at layers 6/9/12/15/17, or the message's mean at 12/15,
where the message has attended to the category) says whether the message falls under it. The head is
fitted on categories the evaluation never uses: the custom-category training pool
(``trainer.policy_following.TRAIN_CATEGORIES``: each text with its own category and 6 other pool categories
and 2 general ones), every corpus taxonomy's labelled categories (25 unsafe prompts per category, each with
2 other categories of its taxonomy and 2 pool categories) and 700 safe corpus prompts with 2 random
categories each. It is measured on the policy-following pairs (``evaluation/policy_following.jsonl``):
average precision of (text, category) rows, and the pairs' accuracy under one rule that both scorers are
given (the covering policy's category of the text fires, no custom category of the other policy fires;
the general categories borrow trained heads in serving and are left out), beside the same rule on the
shipped heads' own category scores and their real pair accuracy. About 17 minutes on 2 cores
(19,208 training rows); the features are cached in ``var/bench/category-probe/``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from django_setup import ROOT

from bench.layer_states import layer_states
from evaluation.policy_following import _spec, load_pairs, score
from guard import runtime
from guard.backends.base import GuardRequest
from trainer.policy_following import BENIGN_TEXTS, GENERAL_CATEGORIES, TRAIN_CATEGORIES

LAYERS = (6, 9, 12, 15, 17)
GENERAL = {name for name, _ in GENERAL_CATEGORIES}
QUESTION = "\nQuestion: Does the message fall under the category? Answer:"
Row = tuple[str, str, int, str]  # (category text, message, 1 if the message falls under it, group)


def training_rows(data: Path, rng: random.Random) -> list[Row]:
    pool = {c.key: f"{c.name}: {c.description}" for c in TRAIN_CATEGORIES}
    general = [f"{name}: {description}" for name, description in GENERAL_CATEGORIES]
    rows: list[Row] = []
    for category in TRAIN_CATEGORIES:
        for text in category.violating:
            rows.append((pool[category.key], text, 1, "pool"))
            rows += [(pool[k], text, 0, "pool") for k in rng.sample([k for k in pool if k != category.key], 6)]
            rows += [(g, text, 0, "general") for g in rng.sample(general, 2)]
    rows += [(pool[k], text, 0, "pool") for text in BENIGN_TEXTS for k in rng.sample(list(pool), 10)]
    taxonomies = json.loads((data / "taxonomies.json").read_text())
    described = {(t, code): (d if ":" in d else f"{code}: {d}") for t, codes in taxonomies.items() if isinstance(codes, dict)
                 for code, d in codes.items()}
    records = [json.loads(line) for path in sorted(data.glob("*.jsonl")) for line in path.open()]
    records = [r for r in records if r.get("prompt") and len(r["prompt"]) < 600]
    rng.shuffle(records)
    per_category: dict[tuple[str, str], int] = {}
    for record in records:
        taxonomy = record.get("taxonomy")
        codes = [c for c in record.get("categories") or [] if (taxonomy, c) in described]
        if record["prompt_label"] != "unsafe" or not codes or per_category.get((taxonomy, codes[0]), 0) >= 25:
            continue
        per_category[(taxonomy, codes[0])] = per_category.get((taxonomy, codes[0]), 0) + 1
        text = record["prompt"]
        rows.append((described[(taxonomy, codes[0])], text, 1, "taxonomy"))
        others = [k for k in described if k[0] == taxonomy and k[1] not in codes]
        rows += [(described[k], text, 0, "taxonomy") for k in rng.sample(others, min(2, len(others)))]
        rows += [(pool[k], text, 0, "pool") for k in rng.sample(list(pool), 2)]
    everything = [*pool.values(), *general, *described.values()]
    safe = [r for r in records if r["prompt_label"] == "safe"][:700]
    rows += [(c, r["prompt"], 0, "safe") for r in safe for c in rng.sample(everything, 2)]
    return rows


def evaluation_rows(pairs: Sequence[dict]) -> list[Row]:
    """Every category of both policies of every pair; the group says where the row belongs."""
    return [(f"{c['name']}: {c['description']}", pair["text"], int(which == "covering_policy" and c["code"] == pair["code"]),
             f"{index}|{which}|{c['name']}")
            for index, pair in enumerate(pairs) for which in ("covering_policy", "other_policy") for c in pair[which]["categories"]]


def features(backend: object, rows: Sequence[Row], what: str) -> tuple[np.ndarray, np.ndarray]:
    """(last token at LAYERS, the message's mean at LAYERS) of every row, float32."""
    tokenizer = backend.tokenizer  # type: ignore[attr-defined]
    question = tokenizer.encode(QUESTION, add_special_tokens=False)
    ids, spans = [], []
    for category, text, _, _ in rows:
        head = [tokenizer.bos_token_id, *tokenizer.encode(f"Category: {category}\nMessage: ", add_special_tokens=False)]
        message = tokenizer.encode(text, add_special_tokens=False)[:160]
        ids.append(head + message + question)
        spans.append((len(head), len(head) + len(message)))
    last = np.zeros((len(rows), len(LAYERS), backend.runner.hidden_size), np.float32)  # type: ignore[attr-defined]
    mean = np.zeros_like(last)
    for batch, block in layer_states(backend.runner, ids, LAYERS, what):  # type: ignore[attr-defined]
        for r, i in enumerate(batch):
            start, end = spans[i]
            last[i] = block[:, r, len(ids[i]) - 1].numpy()
            mean[i] = block[:, r, start:end].mean(dim=1).numpy()
    return last, mean


def pair_accuracy(rows: Sequence[Row], scores: np.ndarray, threshold: float, pairs: int) -> float:
    """% of pairs where the covering category fires and no custom category of the other policy does."""
    covering_fires = [False] * pairs
    other_fires = [False] * pairs
    for (_, _, gold, group), probability in zip(rows, scores, strict=True):
        index, which, name = group.split("|", 2)
        if name in GENERAL or probability < threshold:
            continue
        if which == "other_policy":
            other_fires[int(index)] = True
        elif gold:
            covering_fires[int(index)] = True
    return round(100 * np.mean([c and not o for c, o in zip(covering_fires, other_fires, strict=True)]), 1)


def shipped_scores(model: str, pairs: Sequence[dict], rows: Sequence[Row]) -> tuple[np.ndarray, float]:
    """The shipped heads' category score of every evaluation row, and their real pair accuracy."""
    requests = [GuardRequest(policy=_spec(pair[which]), prompt=pair["text"], mode="fast")
                for pair in pairs for which in ("covering_policy", "other_policy")]
    verdicts = [v for s in range(0, len(requests), 32) for v in runtime.classify(requests[s : s + 32], model)]
    by_group = {}
    for index, pair in enumerate(pairs):
        for offset, which in enumerate(("covering_policy", "other_policy")):
            categories = verdicts[2 * index + offset].probabilities.get("categories", {})
            for c in pair[which]["categories"]:
                by_group[f"{index}|{which}|{c['name']}"] = categories.get(c["code"], 0.0)
    real = score(list(pairs), verdicts[0::2], verdicts[1::2])["pair_accuracy"]
    return np.array([by_group[row[3]] for row in rows]), real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "guardsite-guard-270m"))
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "data" / "train")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "bench" / "category-probe")
    parser.add_argument("--limit", type=int, default=0, help="keep every n-th training row (a smoke run)")
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.preprocessing import StandardScaler

    torch.manual_seed(0)
    pairs = load_pairs()
    rows = training_rows(args.data, random.Random(0))[:: max(args.limit, 1)]
    held = evaluation_rows(pairs)
    print(f"training rows {len(rows)} ({sum(r[2] for r in rows)} falling under their category), evaluation rows {len(held)}")
    backend = runtime.get_backend(args.model, heads=False)
    cache = args.cache / f"features{f'-every{args.limit}' if args.limit > 1 else ''}.npz"
    if cache.exists():
        saved = np.load(cache)
        train_last, train_mean, held_last, held_mean = (saved[k] for k in ("train_last", "train_mean", "held_last", "held_mean"))
    else:
        started = time.perf_counter()
        held_last, held_mean = features(backend, held, "evaluation rows")
        train_last, train_mean = features(backend, rows, "training rows")
        print(f"features: {time.perf_counter() - started:.0f} s")
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, train_last=train_last, train_mean=train_mean, held_last=held_last, held_mean=held_mean)
    y = np.array([r[2] for r in rows])
    gold = np.array([r[2] for r in held])
    thresholds = (0.3, 0.5, 0.7, 0.9)
    print(f"\n{'scorer':44} {'AP':>5}  " + "  ".join(f"pairs@{t}" for t in thresholds))
    scores, real = shipped_scores(args.model, pairs, held)
    print(f"{'shipped heads (real pairs: ' + str(real) + '%)':44} {100 * average_precision_score(gold, scores):5.1f}  "
          + "  ".join(f"{pair_accuracy(held, scores, t, len(pairs)):7}" for t in thresholds))
    variants = {"last token, layer 12": (train_last[:, [2]], held_last[:, [2]]),
                "last token, layer 17": (train_last[:, [4]], held_last[:, [4]]),
                "last token, layers 6-17": (train_last, held_last),
                "message mean, layers 12+15": (train_mean[:, [2, 3]], held_mean[:, [2, 3]]),
                "both, layers 12+15": (np.concatenate([train_last[:, [2, 3]], train_mean[:, [2, 3]]], axis=1),
                                       np.concatenate([held_last[:, [2, 3]], held_mean[:, [2, 3]]], axis=1))}
    for strength in (0.01, 0.1):
        for name, (x_train, x_held) in variants.items():
            x_train, x_held = x_train.reshape(len(x_train), -1), x_held.reshape(len(x_held), -1)
            scaler = StandardScaler().fit(x_train)
            probe = LogisticRegression(C=strength, max_iter=3000, class_weight="balanced").fit(scaler.transform(x_train), y)
            scores = probe.predict_proba(scaler.transform(x_held))[:, 1]
            print(f"{name + f', C={strength}':44} {100 * average_precision_score(gold, scores):5.1f}  "
                  + "  ".join(f"{pair_accuracy(held, scores, t, len(pairs)):7}" for t in thresholds), flush=True)


if __name__ == "__main__":
    main()
