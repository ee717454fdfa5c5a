#!/usr/bin/env python
"""How the latent heads judge a harmful request hidden in a long text, and what windows would change.

The features read a text's first and last 96 tokens (``guard.features.PROMPT_TOKENS``), so a
harmful request padded on both sides with ordinary text is never read. This measures it on the
held-out split: harmful requests of StrongREJECT, AdvBench and HarmfulQA, alone; after the first
1,200 characters of a long held-out answer (Arena-Hard, AlpacaEval: harmless); between that and the
next 1,200; and the two fillers alone (the false-positive floor). Readers: the shipped verdict (the
prompt head on the features' mean, with the peak head where the heads carry one: ``guard.peak_reading``);
each of those two alone (and the peak head's reading time per long text); then, as measured before the
peak head existed, the maximum of the prompt head's probability over windows of N tokens (every N - N/3), or over
sentences: what "read the whole text" would give with the heads as fitted (on whole prompts); and
the shipped prompt head (linear on the tuned layers' mean) applied to spans of S tokens of the whole
text read in one forward (each token's state has read everything before it): the maximum over spans.

    .venv/bin/python bench/long_texts.py [--model models/guardsite-guard-270m] [--data var/data] [--n 40] [--requests 100]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from django_setup import ROOT

from guard import runtime
from guard.backends.base import GuardRequest
from policies import presets
from trainer.head_data import heldout_sample

HARMFUL_FILES = ("strongreject", "advbench", "harmfulqa")
FILLER_FILES = ("arena_hard", "alpaca_eval")
OTHER_ANSWER_FILES = ("coconot", "rbr_gold", "self_instruct_seed", "gsm8k_sample")
CUT = 1200  # characters of filler on each side


def sentences(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"(?<=[.!?])\s+|\n+", text) if part.strip()]


def windows(tokenizer: object, size: int) -> Callable[[str], list[str]]:
    stride = max(size - size // 3, 1)

    def cut(text: str) -> list[str]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        starts = list(range(0, max(len(ids) - size, 0), stride)) + [max(len(ids) - size, 0)]
        return tokenizer.batch_decode([ids[s : s + size] for s in starts], skip_special_tokens=True)  # type: ignore[attr-defined]

    return cut


@torch.inference_mode()
def span_scores(backend: object, text: str, span: int) -> float:
    """The linear tuned prompt head on every ``span``-token stretch of the whole text (contextual states,
    no clipping), the highest probability."""
    heads, reader = backend.heads, backend.token_reader()  # type: ignore[attr-defined]
    head = heads.prompt
    assert reader is not None and head.blocks == "tuned" and head.hidden is None, "needs a linear head on tuned layers"
    states = reader.states(reader.token_ids([text], 2000))[0]
    per_token = ((states - head.mean) / head.scale) @ head.coef  # the head's logit is their mean plus its bias
    width = min(span, len(per_token))
    sums = np.convolve(per_token, np.ones(width), mode="valid") / width
    return float(1 / (1 + np.exp(-(sums.max() + head.bias))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "guardsite-guard-270m"))
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "data")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--requests", type=int, default=0,
                        help="padded requests (default: one per filler, up to --n); more reuse the fillers in turn")
    parser.add_argument("--shipped-only", action="store_true", help="the shipped verdict and its two heads, not the earlier readers")
    args = parser.parse_args()

    held = heldout_sample(args.data / "heldout")
    fillers = [r.response for r in held if r.file in FILLER_FILES and r.response and len(r.response) > 2 * CUT + 100][: args.n]
    count = args.requests or min(args.n, len(fillers))
    harmful = [r.prompt for r in held if r.file in HARMFUL_FILES and r.prompt_label == "unsafe"][:count]
    others = [r.response for r in held if r.file in OTHER_ANSWER_FILES and r.response and len(r.response) > 800][: args.n]
    pairs = [(request, fillers[k % len(fillers)]) for k, request in enumerate(harmful)]  # more requests reuse fillers
    sets = {
        "harmful request alone": [h for h, _ in pairs],
        "at the end of the filler": [f[:CUT] + " " + h for h, f in pairs],
        "in the middle of the filler": [f[:CUT] + " " + h + " " + f[CUT : 2 * CUT] for h, f in pairs],
        "the filler alone": [f[: 2 * CUT] for f in fillers[: len(pairs)]],
        "other long held-out answers": others,
    }
    # Where each padded request sits (characters), to check that a verdict's evidence points at it.
    request_spans = {text: (CUT + 1, CUT + 1 + len(h)) for name in ("at the end of the filler", "in the middle of the filler")
                     for text, (h, _) in zip(sets[name], pairs, strict=True)}

    backend = runtime.get_backend(args.model)
    heads = backend.heads
    assert heads is not None, "the model has no latent heads"
    spec = presets.preset_spec("general")
    extractor = backend.feature_extractor()

    evidence: dict[str, str] = {}

    def verdicts(texts: list[str]) -> np.ndarray:
        judged = runtime.classify([GuardRequest(spec, t) for t in texts], args.model)
        evidence.update({t: v.evidence for t, v in zip(texts, judged, strict=True) if v.evidence})
        return np.array([v.prompt_label == "unsafe" for v in judged])

    def max_over(cut: Callable[[str], list[str]]) -> Callable[[list[str]], np.ndarray]:
        def decide(texts: list[str]) -> np.ndarray:
            out = []
            for text in texts:
                vectors, _ = extractor.encode([(piece, None) for piece in cut(text) or [text]])
                out.append(heads.prompt.probability(heads.prompt.view(heads.layout, vectors, None)).max())
            return np.array(out) >= heads.prompt.threshold

        return decide

    reader = backend.token_reader() if heads.peak is not None else None
    peak_seconds: list[float] = []

    def peak_alone(texts: list[str]) -> np.ndarray:
        assert reader is not None and heads.peak is not None
        out = []
        for text in texts:
            started = time.perf_counter()
            out.append(reader.peaks(heads.peak, [text])[0])
            peak_seconds.append(time.perf_counter() - started)
        return np.nan_to_num(np.array(out), nan=-np.inf) >= heads.peak.threshold

    readers: dict[str, Callable[[list[str]], np.ndarray]] = {
        "shipped (the prompt head" + (" + the peak head)" if reader else ")"): verdicts,
        "the prompt head alone (mean of the first and last 96 tokens)": max_over(lambda text: [text]),
    }
    if reader is not None:
        readers["the peak head alone (long prompts read whole)"] = peak_alone
    if args.shipped_only:
        return report(sets, readers, len(pairs), peak_seconds, evidence, request_spans)
    for size in (192, 96, 48):
        readers[f"max over windows of {size} tokens"] = max_over(windows(backend.tokenizer, size))
    readers["max over sentences"] = max_over(sentences)
    for span in (64, 32, 16):
        readers[f"whole text, max over {span}-token spans"] = (
            lambda texts, span=span: np.array([span_scores(backend, t, span) for t in texts]) >= heads.prompt.threshold
        )

    report(sets, readers, len(pairs), peak_seconds, evidence, request_spans)


def report(sets: dict[str, list[str]], readers: dict[str, Callable[[list[str]], np.ndarray]], padded: int,
           peak_seconds: list[float], evidence: dict[str, str], request_spans: dict[str, tuple[int, int]]) -> None:
    names = list(sets)
    print(f"flagged under the General preset, {padded} padded requests ({CUT} characters of filler a side)")
    print(" | ".join(["reader", *names]))
    for reader, decide in readers.items():
        cells = [reader]
        for name in names:
            flagged = decide(sets[name])
            cells.append(f"{int(flagged.sum())}/{len(flagged)}")
        print(" | ".join(cells), flush=True)
    if evidence:
        cells = []
        for name in ("at the end of the filler", "in the middle of the filler"):
            shown = [(text, evidence[text]) for text in sets[name] if text in evidence]
            on_it = sum(overlaps(text.find(found), len(found), request_spans[text]) for text, found in shown)
            cells.append(f"{name} {on_it}/{len(shown)}")
        print("verdicts whose evidence overlaps the hidden request: " + ", ".join(cells))
    if peak_seconds:
        print(f"the peak head's reading of a long text: {1000 * statistics.median(peak_seconds):.0f} ms median, "
              f"{1000 * max(peak_seconds):.0f} ms at most ({len(peak_seconds)} texts, this machine)")


def overlaps(at: int, length: int, span: tuple[int, int]) -> bool:
    return at >= 0 and at < span[1] and at + length > span[0]


if __name__ == "__main__":
    main()
