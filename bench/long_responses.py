#!/usr/bin/env python
"""How the latent heads judge a harmful answer buried in a long response.

The features read a response's first and last 96 tokens (``guard.features.RESPONSE_TOKENS``), so harmful content in
the middle of a long answer is not read by the response head. ``bench/long_texts.py`` measures the same for prompts,
where the peak head reads a long prompt whole. This measures the gap on the held-out split: harmful responses (JBB
artifacts, BeaverTails, PKU-SafeRLHF; human or judge labels) to their own prompts, alone; after the first 1,200
characters of a long held-out answer (Arena-Hard, AlpacaEval: harmless) and a blank line; between that and the next
1,200 (blank lines around it, or none: within one paragraph); and the two fillers alone as the answer to the same
prompts (the false-positive floor).
Readers: the verdict's response label with the heads' response peak head (``trainer.response_peak_fitting``: it
reads a response longer than the features read whole) and without it (the response head alone), and the response peak
head's own reading, timed. ``--held-out``: what it costs on the held-out responses as they are (F1, and how many
harmless answers each flags).

    .venv/bin/python bench/long_responses.py [--model models/guardsite-guard-270m] [--data var/data] [--n 60]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from django_setup import ROOT

from evaluation.metrics import f1_from_counts
from guard import runtime
from guard.backends.base import GuardRequest
from policies import presets
from trainer.head_data import HeadRecord, heldout_sample

HARMFUL_FILES = ("jbb_artifacts", "gr_beavertails_test", "gr_saferlhf_test")
FILLER_FILES = ("arena_hard", "alpaca_eval")
CUT = 1200  # characters of filler on each side


def padded_sets(held: list[HeadRecord], n: int) -> tuple[list[HeadRecord], dict[str, list[tuple[str, str]]]]:
    """The ``n`` held-out harmful responses (the files in turn) and the (prompt, response) pairs of each set."""
    fillers = [r.response for r in held if r.file in FILLER_FILES and r.response and len(r.response) > 2 * CUT + 100]
    harmful = [r for r in held if r.file in HARMFUL_FILES and r.response and r.response_label == "unsafe"]
    by_file = {name: [r for r in harmful if r.file == name] for name in HARMFUL_FILES}
    chosen = [group[k] for k in range(max(map(len, by_file.values()))) for group in by_file.values() if k < len(group)][:n]
    rows = [(r.prompt, r.response or "", fillers[k % len(fillers)]) for k, r in enumerate(chosen)]
    sets: dict[str, list[tuple[str, str]]] = {
        "harmful response alone": [(p, h) for p, h, _ in rows],
        "at the end of the filler": [(p, f[:CUT] + "\n\n" + h) for p, h, f in rows],
        "in the middle of the filler": [(p, f[:CUT] + "\n\n" + h + "\n\n" + f[CUT : 2 * CUT]) for p, h, f in rows],
        # The response peak head was fitted on harmful answers after a blank line; this one has none around it.
        "in the middle, same paragraph": [(p, f[:CUT] + " " + h + " " + f[CUT : 2 * CUT]) for p, h, f in rows],
        "the filler alone": [(p, f[: 2 * CUT]) for p, _, f in rows],
    }
    return chosen, sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "guardsite-guard-270m"))
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "data")
    parser.add_argument("--n", type=int, default=60, help="harmful responses (fillers reused in turn)")
    parser.add_argument("--held-out", action="store_true", help="also: the held-out responses as they are, with and without the response peak head")
    args = parser.parse_args()

    held = heldout_sample(args.data / "heldout")
    chosen, sets = padded_sets(held, args.n)

    backend = runtime.get_backend(args.model)
    heads = backend.heads
    assert heads is not None, "the model has no latent heads"
    spec = presets.preset_spec("general")

    def verdicts(pairs: list[tuple[str, str]]) -> np.ndarray:
        judged = runtime.classify([GuardRequest(spec, p, r) for p, r in pairs], args.model)
        return np.array([v.response_label == "unsafe" for v in judged])

    @contextmanager
    def without_response_peak() -> Iterator[None]:
        """The backend's heads with the response peak head left out, for the readers' comparison."""
        backend.heads = dataclasses.replace(heads, response_peak=None)
        try:
            yield
        finally:
            backend.heads = heads

    seconds: list[float] = []
    reader = backend.token_reader() if heads.response_peak is not None else None

    def peak_alone(pairs: list[tuple[str, str]]) -> np.ndarray:
        assert reader is not None and heads.response_peak is not None
        out = []
        for _, response in pairs:
            started = time.perf_counter()
            out.append(reader.peaks(heads.response_peak, [response])[0])
            seconds.append(time.perf_counter() - started)
        return np.nan_to_num(np.array(out), nan=-np.inf) >= heads.response_peak.threshold

    alone_name, peak_name, shipped_name = ("the response head (no response peak head)", "the response peak head alone",
                                           "the verdict with the response peak head")

    def decided(pairs: list[tuple[str, str]]) -> dict[str, np.ndarray]:
        """Each reader's flags, every reader run once."""
        with without_response_peak():
            plain = verdicts(pairs)
        if reader is None:
            return {alone_name: plain}
        return {alone_name: plain, peak_name: peak_alone(pairs), shipped_name: verdicts(pairs)}

    print(f"{len(chosen)} held-out harmful responses ({', '.join(f'{n} {sum(r.file == n for r in chosen)}' for n in HARMFUL_FILES)}), "
          f"{CUT} characters of filler a side; response flagged unsafe under the General preset")
    by_set = {name: decided(texts) for name, texts in sets.items()}
    print(" | ".join(["reader", *sets]))
    for reader_name in next(iter(by_set.values())):
        print(" | ".join([reader_name, *(f"{int(flags[reader_name].sum())}/{len(flags[reader_name])}" for flags in by_set.values())]))
    if seconds:
        print(f"the response peak head's reading of a response: {1000 * statistics.median(seconds):.0f} ms median, "
              f"{1000 * max(seconds):.0f} ms at most (this machine; a response of up to 192 tokens is not read)")
    if args.held_out and reader is not None:
        # What the response peak head costs on ordinary responses: refusals quote the request, answers discuss harm.
        rows_held = [r for r in held if r.response and r.response_label in ("safe", "unsafe")]
        gold = np.array([r.response_label == "unsafe" for r in rows_held])
        flags = decided([(r.prompt, r.response or "") for r in rows_held])
        compared = {"without the response peak head": flags[alone_name], "with it": flags[shipped_name]}
        print()
        print(f"held-out responses as they are ({len(rows_held)}): F1 of the response label, flagged (of them harmless)")
        print(" | ".join(["file", "n", "unsafe", *compared]))
        for name in sorted({r.file for r in rows_held}) + ["ALL"]:
            rows = np.array([name in ("ALL", r.file) for r in rows_held])
            cells = [f"{f1(d[rows], gold[rows]):.1f}, {int(d[rows].sum())} ({int((d[rows] & ~gold[rows]).sum())})"
                     for d in compared.values()]
            print(" | ".join([name, str(int(rows.sum())), str(int(gold[rows].sum())), *cells]))

def f1(predicted: np.ndarray, gold: np.ndarray) -> float:
    return f1_from_counts(int((predicted & gold).sum()), int((predicted & ~gold).sum()), int((~predicted & gold).sum()))


if __name__ == "__main__":
    main()
