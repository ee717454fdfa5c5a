#!/usr/bin/env python
"""Does a question after the text make better features? The same backbone, two feature recipes.

    .venv/bin/python scripts/build_guard_data.py --out var/data        # once: the splits
    .venv/bin/python bench/question_suffix.py [--model models/guardsite-guard-270m]

The heads read each text's hidden states mean-pooled over its own tokens (``guard.features``).
This benchmark appends a question after the prompt ("Is the user's message above harmful or
unsafe? Answer:") and after the response (the same about the assistant's answer), in the one
forward, and pools the question's tokens too: they attend to the whole text at every layer, so they
carry a reading of it that mean pooling of the text alone does not. The conversation row is
``<bos>User: {prompt}{prompt question}\\n\\nAssistant: {response}{response question}``.

It fits the task heads exactly as ``fit_heads`` does (``guard.head_fitting.fit_probe_head``: the
same candidates, the same validation split) once on the shipped recipe's blocks (the text's mean
at the taps) and once with the question's mean beside them, on the fit sample's distinct texts,
and prints validation average precision and held-out F1 per file (each head's own threshold; the
policy's coverage rules of ``bench/heads.py`` are not applied, so figures differ from its table).
The extraction is cached under ``var/bench/question-suffix/`` (about 35 minutes on 2 cores cold).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from django_setup import ROOT

from bench.layer_states import ATTACK_FILES, f1, layer_states
from guard import runtime
from guard.features import (
    ASSISTANT_MARK,
    PROMPT_TOKENS,
    RESPONSE_TOKENS,
    USER_MARK,
    _clip,
    tap_layers,
)
from guard.head_fitting import LINEAR_KINDS, Split, average_precision, fit_probe_head
from trainer.head_data import HeadRecord, fit_sample, heldout_sample
from trainer.heads import PROMPT_HEAD_KINDS, in_validation

PROMPT_QUESTION = "\n\nQuestion: Is the user's message above harmful or unsafe? Answer:"
RESPONSE_QUESTION = "\n\nQuestion: Is the assistant's answer above harmful or unsafe? Answer:"
SPANS = ("prompt", "prompt_question", "response", "response_question")


def extract(model: str, records: Sequence[HeadRecord], out: Path) -> dict[str, np.ndarray]:
    """Mean states at the taps over each span of every distinct conversation (float16, cached in ``out``)."""
    if out.exists():
        return dict(np.load(out))
    backend = runtime.get_backend(model, heads=False)
    runner, tokenizer = backend.runner, backend.tokenizer
    layers = tap_layers(int(runner.num_layers))

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    head = [tokenizer.bos_token_id, *encode(USER_MARK)]
    prompt_question, response_question, assistant = encode(PROMPT_QUESTION), encode(RESPONSE_QUESTION), encode(ASSISTANT_MARK)
    rows: list[tuple[list[int], list[tuple[int, int] | None]]] = []
    for record in records:
        prompt = _clip(encode(record.prompt) or [tokenizer.eos_token_id], PROMPT_TOKENS)
        ids = head + prompt
        spans: list[tuple[int, int] | None] = [(len(head), len(ids))]
        ids = ids + prompt_question
        spans.append((len(ids) - len(prompt_question), len(ids)))
        if record.response:
            response = _clip(encode(record.response) or [0], RESPONSE_TOKENS)
            ids = ids + assistant
            spans.append((len(ids), len(ids) + len(response)))
            ids = ids + response + response_question
            spans.append((len(ids) - len(response_question), len(ids)))
        else:
            spans += [None, None]
        rows.append((ids, spans))
    hidden = int(runner.hidden_size)
    pooled = {span: np.full((len(rows), len(layers) * hidden), np.nan, dtype=np.float32) for span in SPANS}
    for batch, states in layer_states(runner, [ids for ids, _ in rows], layers, f"{out.stem}: conversations"):
        for k, i in enumerate(batch):
            for span, bounds in zip(SPANS, rows[i][1], strict=True):
                if bounds is not None:
                    pooled[span][i] = states[:, k, bounds[0] : bounds[1]].mean(dim=1).reshape(-1).numpy()
    data = {span: vectors.astype(np.float16) for span, vectors in pooled.items()}
    data.update(
        ids=np.array([r.id for r in records]), files=np.array([r.file for r in records]),
        prompt_label=np.array([str(r.prompt_label) for r in records]),
        response_label=np.array([str(r.response_label) for r in records]),
        refusal_label=np.array([str(r.refusal_label) for r in records]),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **data)
    return data


def distinct(records: Sequence[HeadRecord]) -> list[HeadRecord]:
    return list({(r.prompt, r.response): r for r in reversed(records)}.values())[::-1]


def features(data: dict[str, np.ndarray], spans: Sequence[str]) -> np.ndarray:
    return np.concatenate([data[span].astype(np.float32) for span in spans], axis=1)


TASKS = {
    # task: (label field, positive label, labels counted, (shipped spans, with the questions), candidates)
    "prompt": ("prompt_label", "unsafe", ("safe", "unsafe"), (("prompt",), ("prompt", "prompt_question")), PROMPT_HEAD_KINDS),
    "response": ("response_label", "unsafe", ("safe", "unsafe"),
                 (("response", "prompt"), ("response", "response_question", "prompt", "prompt_question")), LINEAR_KINDS),
    "refusal": ("refusal_label", "refusal", ("refusal", "compliance"), (("response",), ("response", "response_question")),
                LINEAR_KINDS),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "guardsite-guard-270m"))
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "data")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "bench" / "question-suffix")
    parser.add_argument("--limit", type=int, default=0, help="keep every n-th conversation (a smoke run)")
    args = parser.parse_args()
    step, suffix = max(args.limit, 1), f"-every{args.limit}" if args.limit > 1 else ""
    fit = extract(args.model, distinct(fit_sample(args.data / "train"))[::step], args.cache / f"fit{suffix}.npz")
    held = extract(args.model, distinct(heldout_sample(args.data / "heldout"))[::step], args.cache / f"heldout{suffix}.npz")
    validation = np.array([in_validation(str(i)) for i in fit["ids"]])
    print(f"\n{'task':9} {'features':26} {'val AP':>7} {'held-out F1':>11}  per file (held-out F1)")
    for task, (field, positive, labels, recipes, kinds) in TASKS.items():
        rows, held_rows = np.isin(fit[field], labels), np.isin(held[field], labels)
        y, gold, files = fit[field][rows] == positive, held[field][held_rows] == positive, held["files"][held_rows]
        in_val = validation[rows]
        for recipe, spans in zip(("mean (shipped)", "mean + question"), recipes, strict=True):
            x, x_held = features(fit, spans)[rows], features(held, spans)[held_rows]
            head = fit_probe_head(Split(x[~in_val], y[~in_val], x[in_val], y[in_val]), source="prompt", blocks="all",
                                  kinds=kinds)
            predicted = head.probability(x_held) >= head.threshold
            per_file = {name: f1(gold[files == name], predicted[files == name]) for name in sorted(set(files))
                        if gold[files == name].any()}  # F1 of the positive label: files with positives
            if task == "prompt":
                chat = np.char.startswith(files.astype(str), "toxicchat")
                per_file = {"ToxicChat": f1(gold[chat], predicted[chat]),
                            **{k: v for k, v in per_file.items() if k.startswith("openai") or k in ATTACK_FILES}}
            ap = 100 * average_precision(head.probability(x[in_val]), y[in_val])
            print(f"{task:9} {recipe:26} {ap:7.1f} {f1(gold, predicted):11}  "
                  + ", ".join(f"{name} {value}" for name, value in per_file.items()))


if __name__ == "__main__":
    main()
