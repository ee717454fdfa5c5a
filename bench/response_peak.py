#!/usr/bin/env python
"""Variants of the response peak head on one draw of its fit texts, the tuned copy's token states computed once.

``trainer.response_peak_fitting`` fits the response peak head on padded harmful answers, harmful and harmless responses
and harmless answers alone, read by the tuned prompt copy token by token (about 14 minutes of forwards on 2 cores). Here
those states, the held-out texts' states and the response head's own verdicts are computed once and cached (under
``--cache``, keyed by the tuned weights' digest and the texts), then each variant is fitted in seconds
(``trainer.peak_fitting.fit_on_states``) and measured on:

* the held-out padded answers of ``bench/long_responses.py`` (60 held-out harmful responses after or inside 1,200
  characters of a held-out harmless answer; the fillers alone): the peak head alone and with the response head;
* every held-out response as it is (the responses over 192 tokens are the ones it reads): response F1 with the response
  head alone and with the peak head added, and how many harmless answers each flags.

Every response is read after its prompt as the shipped head reads it (``<bos>User: {prompt, first 128 tokens}\n\n
Assistant: {response}``, the states of the response's own tokens kept); ``--alone``: each response read alone, as the
first response peak head did (the prompt in context caught more padded answers on validation: docs/guard.md).

    .venv/bin/python bench/response_peak.py [--model models/guardsite-guard-270m] [--data var/data] [--alone]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from django_setup import ROOT
from long_responses import f1, padded_sets

from guard import runtime
from guard.backends.base import GuardRequest
from guard.peak_reading import PeakHead, TokenReader
from policies import presets
from trainer.head_data import fit_sample, heldout_sample
from trainer.peak_fitting import TEXT_KINDS, PeakTexts, filler_records, fit_on_states, reader_of
from trainer.response_peak_fitting import (
    RESPONSE_CONTEXT_TOKENS,
    RESPONSE_PEAK_WIDTHS,
    response_peak_sizes,
    response_peak_texts,
)

States = list[np.ndarray]


def cached_states(cache: Path, name: str, rows: list[list[int]], reader: TokenReader, digest: str,
                  prompts: list[str] | None = None) -> States:
    """The tuned copy's (tokens, hidden) states of each token row, from ``cache`` or computed and stored (float16);
    with ``prompts``, each row read after its prompt (``TokenReader.before_responses``) and the states of its own
    tokens kept."""
    if prompts is not None:
        before = reader.before_responses(prompts, RESPONSE_CONTEXT_TOKENS)
        states = cached_states(cache, name + "-ctx", [b + row for b, row in zip(before, rows, strict=True)], reader, digest)
        return [s[len(b) :] for s, b in zip(states, before, strict=True)]
    key = hashlib.sha256((digest + repr(rows)).encode()).hexdigest()[:16]
    path = cache / f"{name}-{key}.npz"
    if path.is_file():
        stored = np.load(path)
        flat, ends = stored["flat"], stored["ends"].astype(int)
        starts = np.concatenate([[0], ends[:-1]]).astype(int) if len(ends) else ends
        return [flat[a:b].astype(np.float32) for a, b in zip(starts, ends, strict=True)]
    states = reader.states(rows, log=print) if rows else []
    cache.mkdir(parents=True, exist_ok=True)
    flat = np.concatenate(states).astype(np.float16) if states else np.zeros((0, 1), np.float16)
    np.savez(path, flat=flat, ends=np.cumsum([len(s) for s in states]))
    return [s.astype(np.float16).astype(np.float32) for s in states]


def subset(texts: PeakTexts, states: dict[str, States], keep: Callable[[str], bool]) -> tuple[PeakTexts, dict[str, States]]:
    """The texts (and their states) whose harmful rows come from files ``keep`` accepts."""
    chosen = {kind: [i for i, file in enumerate(texts.sources[kind]) if keep(file)] for kind in ("padded", "harmful")}
    sub = dataclasses.replace(texts, padded=[texts.padded[i] for i in chosen["padded"]],
                              spans=[texts.spans[i] for i in chosen["padded"]],
                              harmful=[texts.harmful[i] for i in chosen["harmful"]])
    return sub, {**states, **{kind: [states[kind][i] for i in rows] for kind, rows in chosen.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "guardsite-guard-270m"))
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "data")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "bench" / "response_peak")
    parser.add_argument("--alone", action="store_true", help="read each response alone (no prompt before it)")
    args = parser.parse_args()

    backend = runtime.get_backend(args.model)
    heads = backend.heads
    assert heads is not None and heads.tuned is not None, "the model has no tuned layers to read"
    reader = reader_of(backend)
    digest = heads.tuned.digest
    texts = response_peak_texts(reader, fit_sample(args.data / "train"), filler_records(args.data / "train"),
                                response_peak_sizes())
    states = {kind: cached_states(args.cache, kind, getattr(texts, kind), reader, digest,
                                  None if args.alone else texts.prompts[kind]) for kind in TEXT_KINDS}

    held = heldout_sample(args.data / "heldout")
    _, sets = padded_sets(held, 60)
    answered = [r for r in held if r.response and r.response_label in ("safe", "unsafe")]
    gold = np.array([r.response_label == "unsafe" for r in answered])
    spec = presets.preset_spec("general")
    # The response head's verdicts (no response peak head): what the peak head adds to.
    flags_file = args.cache / f"response-head-{hashlib.sha256((args.model + digest).encode()).hexdigest()[:16]}.npz"
    if flags_file.is_file():
        stored = np.load(flags_file)
        head_flags = {name: stored[f"set{i}"] for i, name in enumerate(sets)}
        held_flags = stored["held"]
    else:
        backend.heads = dataclasses.replace(heads, response_peak=None)
        try:
            def plain(pairs: list[tuple[str, str]]) -> np.ndarray:
                judged = runtime.classify([GuardRequest(spec, p, r) for p, r in pairs], args.model)
                return np.array([v.response_label == "unsafe" for v in judged])

            head_flags = {name: plain(pairs) for name, pairs in sets.items()}
            held_flags = plain([(r.prompt, r.response or "") for r in answered])
        finally:
            backend.heads = heads
        np.savez(flags_file, held=held_flags, **{f"set{i}": flags for i, flags in enumerate(head_flags.values())})
    limit = 2048
    read_sets = {name: reader.token_ids([r for _, r in pairs], limit) for name, pairs in sets.items()}
    context = not args.alone
    set_states = {name: cached_states(args.cache, f"set-{i}", rows, reader, digest, [p for p, _ in sets[name]] if context else None)
                  for i, (name, rows) in enumerate(read_sets.items())}
    held_rows = reader.token_ids([r.response or "" for r in answered], limit)
    long_held = [i for i, row in enumerate(held_rows) if len(row) > 192]
    held_states = cached_states(args.cache, "heldout", [held_rows[i] for i in long_held], reader, digest,
                                [answered[i].prompt for i in long_held] if context else None)

    def flags(head: PeakHead, group: States, rows: list[list[int]]) -> np.ndarray:
        return np.array([len(row) > head.min_tokens and head.peak(s) >= head.threshold for s, row in zip(group, rows, strict=True)])

    variants: dict[str, dict] = {
        "as shipped (widths 32, 64, 128; inside windows; 99th percentile)": {},
        "widths 32, 64": {"widths": (32, 64)},
        "widths 16, 32": {"widths": (16, 32)},
        "widths 64": {"widths": (64,)},
        "no inside windows": {"inside": False},
        "no inside windows, widths 32, 64": {"inside": False, "widths": (32, 64)},
        "no inside windows, widths 64": {"inside": False, "widths": (64,)},
        "98th percentile": {"quantile": 0.98},
        "99.5th percentile": {"quantile": 0.995},
        "C 0.001, 0.003": {"strengths": (0.001, 0.003)},
        "C 0.1, 0.3": {"strengths": (0.1, 0.3)},
    }
    sources = {"positives: JBB artifacts and synthetic only": lambda f: f in ("jbb_artifacts", "synthetic_refusal"),
               "positives: no PKU-SafeRLHF": lambda f: f != "gr_saferlhf_test"}
    header = ["variant", "val AP", "val padded %", *(f"{name} (peak / either)" for name in sets),
              "held-out long harmless / harmful flagged", "held-out response F1"]
    base_f1 = f1(held_flags, gold)
    print(f"held-out responses: {len(answered)}, {len(long_held)} over 192 tokens "
          f"({int(gold[long_held].sum())} harmful); response F1 without a response peak head {base_f1:.1f}; "
          "padded sets: " + ", ".join(f"{name} {int(f.sum())}/{len(f)}" for name, f in head_flags.items()))
    print(" | ".join(header))
    runs = [(name, texts, states, options) for name, options in variants.items()]
    runs += [(name, *subset(texts, states, keep), {}) for name, keep in sources.items()]
    runs += [(name + ", no inside windows", *subset(texts, states, keep), {"inside": False}) for name, keep in sources.items()]
    for name, fit_texts, fit_states, options in runs:
        head = fit_on_states(fit_texts, fit_states, widths=options.get("widths", RESPONSE_PEAK_WIDTHS),
                             inside=options.get("inside", True), min_tokens=192,
                             **{k: v for k, v in options.items() if k in ("strengths", "quantile")})
        cells = [name, f"{head.info['validation_window_ap']:.1f}", f"{head.info['validation_flagged_percent']['padded']}"]
        for set_name, group in set_states.items():
            peak = flags(head, group, read_sets[set_name])
            cells.append(f"{int(peak.sum())} / {int((peak | head_flags[set_name]).sum())}")
        long_flags = flags(head, held_states, [held_rows[i] for i in long_held])
        with_peak = held_flags.copy()
        with_peak[long_held] |= long_flags
        harmful_long = gold[long_held]
        cells.append(f"{int((long_flags & ~harmful_long).sum())} / {int((long_flags & harmful_long).sum())}")
        cells.append(f"{f1(with_peak, gold):.1f}")
        print(" | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
