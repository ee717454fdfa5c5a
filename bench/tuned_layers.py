#!/usr/bin/env python
"""Can a CPU fine-tune the backbone where the heads read it? Layers 12-14 tuned for prompt harm.

    .venv/bin/python scripts/build_guard_data.py --out var/data        # once: the splits
    .venv/bin/python bench/tuned_layers.py [--model models/guardsite-guard-270m] [--epochs 3] [--lr 5e-5]
    .venv/bin/python bench/tuned_layers.py --task response      # the same for response harm

Every head variant tried on the frozen backbone lands on one plateau (docs/guard.md), and fine-tuning
the whole backbone needs a GPU. This measures the cheap middle way: the residual stream after layer
``--cut`` (12 of 18) of every distinct prompt of the fit and held-out samples is computed once and
kept (``<bos>User: {prompt}``, the features' row), then a copy of layers ``cut`` to ``top - 1``
(12-14: 16.5M parameters; ``guard.tuned_layers``) is fine-tuned with a linear head on its mean-pooled
output (class-balanced cross-entropy, AdamW, length-bucketed batches of 16), by the heads' own
tuning (``guard.layer_tuning``, what ``manage.py fit_heads --tune-epochs`` runs; the epoch that
validation AP picks is kept). Only those three layers
run forward and backward, so an epoch over 6,689 prompts takes 3 minutes on 2 cores (5-7 with
anything else running).

It prints validation average precision (all prompts, and ToxicChat's prompts alone: the steadiest
yardstick of chat traffic) and held-out F1 per file at each head's validation F1 maximum, for:
a linear head on the frozen layer ``top``; the tuned layers after each epoch; and the fit's own
candidates (``guard.head_fitting.fit_probe_head``, the prompt head's MLP included) on the mean states
at layer ``cut`` and the frozen layer ``top``, with and without the tuned layers' mean beside them
(``--folds 2``: cross-fitted, each fitting prompt's tuned mean from a fold model not tuned on it).
The layer-``cut`` states are cached under ``var/bench/tuned-layers/`` (about 1.3 GB of float32,
9 minutes cold; float16 overflows on the BOS token's residual stream).

``--task response`` does the same for response harm: the rows are the features' conversations
(``<bos>User: {prompt}\n\nAssistant: {response}``, each side clipped at 192 tokens), pooled over the
response's tokens; the steadiest yardstick is then the human-labelled responses (BeaverTails,
PKU-SafeRLHF, DICES), and the fit's candidates are the response head's (linear, LDA) on the response's
means alone. Its cache is about 1.7 GB (8 minutes cold).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from django_setup import ROOT

from bench.layer_states import ATTACK_FILES, f1, layer_states
from guard import runtime
from guard.features import FeatureExtractor
from guard.head_fitting import (
    LINEAR_KINDS,
    Split,
    average_precision,
    best_threshold,
    fit_probe_head,
)
from guard.layer_tuning import Residuals, pooled, tune_prompt_layers
from guard.tuned_layers import TunedLayers
from trainer.head_data import HeadRecord, fit_sample, heldout_sample
from trainer.heads import PROMPT_HEAD_KINDS, in_validation

# A response row's key: its prompt and response joined by a character neither contains.
PAIR_JOIN = "\x00"


def extract(backend: Any, texts: list[str], cut: int, out: Path) -> Residuals:
    """The layer-``cut`` residuals of every row, ``texts`` being prompts or ``PAIR_JOIN``-joined conversations."""
    if out.exists():
        data = np.load(out, allow_pickle=True)
        if list(data["texts"]) == texts:
            return Residuals(data["flat"], data["offsets"], data["starts"])
    # The features' own rows; the pooled text (the response if any, else the prompt) runs to the row's end.
    conversations = [(prompt, response or None) for prompt, _, response in (text.partition(PAIR_JOIN) for text in texts)]
    features = FeatureExtractor(backend.runner, backend.tokenizer).rows(conversations)
    rows = [row.ids for row in features]
    starts = [(row.response_span or row.prompt_span)[0] for row in features]
    states: list[np.ndarray] = [np.empty(0)] * len(rows)
    for batch, block in layer_states(backend.runner, rows, (cut,), f"layer {cut} of the rows"):
        for r, i in enumerate(batch):
            states[i] = block[0, r, : len(rows[i])].numpy()
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in states])])
    residuals = Residuals(np.concatenate(states), offsets, np.array(starts))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, flat=residuals.flat, offsets=offsets, starts=residuals.starts, texts=np.array(texts, dtype=object))
    return residuals


# The yardstick files of each task's validation AP beside the whole split's: chat traffic for prompts,
# human-labelled responses for responses.
YARDSTICK = {"prompt": ("toxicchat",), "response": ("gr_beavertails", "gr_saferlhf", "dices")}


class Report:
    def __init__(self, y_val: np.ndarray, val_chat: np.ndarray, gold: np.ndarray, files: np.ndarray, task: str) -> None:
        self.y_val, self.val_chat, self.gold, self.files, self.task = y_val, val_chat, gold, files, task
        yardstick = "TC AP" if task == "prompt" else "hum AP"
        print(f"\n{'variant':44} {'val AP':>6} {yardstick:>6} {'held F1':>7}  held-out F1 per file")

    def row(self, name: str, val_scores: np.ndarray, held_scores: np.ndarray, threshold: float | None = None) -> None:
        if threshold is None:
            threshold, _ = best_threshold(val_scores, self.y_val)
        predicted = held_scores >= threshold
        per_file = {}
        if self.task == "prompt":
            chat = np.char.startswith(self.files.astype(str), "toxicchat")
            per_file["ToxicChat"] = f1(self.gold[chat], predicted[chat])
        per_file |= {name: f1(self.gold[self.files == name], predicted[self.files == name]) for name in sorted(set(self.files))
                     if (self.task == "response" or name.startswith("openai") or name in ATTACK_FILES)
                     and self.gold[self.files == name].any()}
        ap = 100 * average_precision(val_scores, self.y_val)
        chat_ap = 100 * average_precision(val_scores[self.val_chat], self.y_val[self.val_chat])
        print(f"{name:44} {ap:6.1f} {chat_ap:6.1f} {f1(self.gold, predicted):7}  "
              + ", ".join(f"{k} {v}" for k, v in per_file.items()), flush=True)


def labelled(records: Sequence[HeadRecord], task: str) -> dict[str, HeadRecord]:
    """The first record of each distinct labelled prompt (``task`` "prompt") or conversation ("response"), by key."""
    out: dict[str, HeadRecord] = {}
    for record in records:
        if task == "prompt" and record.prompt_label in ("safe", "unsafe"):
            out.setdefault(record.prompt, record)
        elif task == "response" and record.response and record.response_label in ("safe", "unsafe"):
            out.setdefault(record.prompt + PAIR_JOIN + record.response, record)
    return out


def unsafe(record: HeadRecord, task: str) -> bool:
    return (record.prompt_label if task == "prompt" else record.response_label) == "unsafe"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "guardsite-guard-270m"))
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "data")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "bench" / "tuned-layers")
    parser.add_argument("--cut", type=int, default=12, help="the cached layer: layers cut..top-1 are tuned")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--folds", type=int, default=1, help="cross-fit the stacked head's tuned block over n folds")
    parser.add_argument("--limit", type=int, default=0, help="keep every n-th prompt (a smoke run)")
    parser.add_argument("--task", choices=("prompt", "response"), default="prompt")
    parser.add_argument("--seed", type=int, default=0, help="another order of the training batches (run-to-run spread)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    step = max(args.limit, 1)
    task = args.task
    fit_items = list(labelled(fit_sample(args.data / "train"), task).items())[::step]
    held_items = list(labelled(heldout_sample(args.data / "heldout"), task).items())[::step]
    fit, held = [r for _, r in fit_items], [r for _, r in held_items]
    texts = sorted({k for k, _ in fit_items} | {k for k, _ in held_items})
    backend = runtime.get_backend(args.model, heads=False)
    suffix = (f"-every{args.limit}" if args.limit > 1 else "") + ("-responses" if task == "response" else "")
    residuals = extract(backend, texts, args.cut, args.cache / f"layer{args.cut}{suffix}.npz")
    position = {text: i for i, text in enumerate(texts)}
    in_val = np.array([in_validation(r.id) for r in fit])
    train = [position[k] for (k, _), v in zip(fit_items, in_val, strict=True) if not v]
    val = [position[k] for (k, _), v in zip(fit_items, in_val, strict=True) if v]
    y_train = np.array([unsafe(r, task) for r, v in zip(fit, in_val, strict=True) if not v])
    y_val = np.array([unsafe(r, task) for r, v in zip(fit, in_val, strict=True) if v])
    val_chat = np.array([r.file.startswith(YARDSTICK[task]) for r, v in zip(fit, in_val, strict=True) if v])
    held_index = [position[k] for k, _ in held_items]
    report = Report(y_val, val_chat, np.array([unsafe(r, task) for r in held]), np.array([r.file for r in held]), task)
    print(f"train {len(train)} {task}s ({int(y_train.sum())} unsafe), validation {len(val)} ({int(y_val.sum())})")

    layers = TunedLayers(backend.model.get_decoder(), args.cut, args.top).float()  # frozen: the baseline
    frozen_path = args.cache / f"frozen-{args.cut}-{args.top}{suffix}.npz"
    if frozen_path.exists():
        frozen = dict(np.load(frozen_path))
    else:
        frozen = {"cut": pooled(residuals, texts_index := list(range(len(texts))), None),
                  "top": pooled(residuals, texts_index, layers)}
        np.savez(frozen_path, **frozen)
    mean, scale = frozen["top"][train].mean(0), frozen["top"][train].std(0) + 1e-3

    from sklearn.linear_model import LogisticRegression

    def standard(x: np.ndarray) -> np.ndarray:
        return (x - mean) / scale

    linear = LogisticRegression(C=0.01, class_weight="balanced", max_iter=2000).fit(standard(frozen["top"][train]), y_train)
    report.row(f"linear, frozen layer {args.top}", linear.decision_function(standard(frozen["top"][val])),
               linear.decision_function(standard(frozen["top"][held_index])))

    decoder = backend.model.get_decoder()

    def tune(rows: list[int], y: np.ndarray, name: str, epoch_rows: bool) -> TunedLayers:
        """Layers cut..top-1 and a linear head tuned on the rows ``rows`` (labels ``y``), as the heads' fit tunes
        them (``guard.layer_tuning``; the validation split picks the epoch kept); each epoch reported."""

        def report_epoch(epoch: int, scores: Callable[[Sequence[int]], np.ndarray]) -> None:
            if epoch_rows:
                report.row(f"{name}, epoch {epoch}", scores(val), scores(held_index))

        result = tune_prompt_layers(decoder, residuals, rows, y, val, y_val, cut=args.cut, top=args.top, epochs=args.epochs,
                                    learning_rate=args.lr, seed=args.seed, log=lambda line: print(line, flush=True),
                                    on_epoch=report_epoch)
        print(f"  {name}: epoch {result.weights.info['kept_epoch']} kept (validation AP)", flush=True)
        return result.weights.module(decoder)

    everything = list(range(len(texts)))
    if args.folds > 1:
        # Cross-fitted: each training prompt's tuned block comes from layers not tuned on it, so the stacked head
        # sees on its fitting rows what it will see in use; validation and held-out rows average the fold models.
        fold_of = np.arange(len(train)) % args.folds
        np.random.default_rng(1).shuffle(fold_of)
        tuned = np.zeros((len(texts), residuals.flat.shape[1]), dtype=np.float32)
        in_train = set(train)
        others = [i for i in everything if i not in in_train]
        for fold in range(args.folds):
            keep = fold_of != fold
            fold_layers = tune([t for t, k in zip(train, keep, strict=True) if k], y_train[keep],
                                  f"fold {fold + 1}/{args.folds}", epoch_rows=False)
            left_out = [t for t, k in zip(train, keep, strict=True) if not k]
            tuned[left_out] = pooled(residuals, left_out, fold_layers)
            tuned[others] += pooled(residuals, others, fold_layers) / args.folds
    else:
        tuned_layers = tune(train, y_train, f"tuned layers {args.cut}-{args.top - 1}", epoch_rows=True)
        tuned = pooled(residuals, everything, tuned_layers)
    crossed = f", {args.folds}-fold cross-fitted" if args.folds > 1 else ""
    for name, blocks in ((f"fit candidates, frozen {args.cut} + {args.top}", (frozen["cut"], frozen["top"])),
                         (f"fit candidates, frozen + tuned {args.top}{crossed}", (frozen["cut"], frozen["top"], tuned))):
        x = np.concatenate(blocks, axis=1)
        kinds = PROMPT_HEAD_KINDS if task == "prompt" else LINEAR_KINDS
        probe = fit_probe_head(Split(x[train], y_train, x[val], y_val), source="prompt", blocks="all", kinds=kinds)
        report.row(f"{name} ({probe.kind})", probe.probability(x[val]), probe.probability(x[held_index]), probe.threshold)


if __name__ == "__main__":
    main()
