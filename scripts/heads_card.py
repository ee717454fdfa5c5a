#!/usr/bin/env python
"""Write the latent heads' section of a model card from the heads' own record and a bench/heads.py run.

    .venv/bin/python bench/heads.py --out var/bench/heads.json
    .venv/bin/python scripts/heads_card.py --model models/guardsite-guard-270m --bench var/bench/heads.json

The section (between ``<!-- heads -->`` markers in the model's README.md, replaced on every run)
gives what the heads saw and under which licences, how each head was chosen on the validation
split, and the held-out figures of the label logits alone and of the heads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

START, END = "<!-- heads -->", "<!-- /heads -->"


def _peak_lines(peak: dict[str, Any] | None, name: str, text: str, flag: str, finds: str) -> list[str]:
    """The card's paragraph and tables for one peak head (``guard/peak_reading.py``), or nothing without one."""
    if not peak:
        return []
    seen = peak.get("info", {})
    flagged = seen.get("validation_flagged_percent", {})
    lines = [
        f"\nA **{name}** reads every {text} longer than {peak['min_tokens']} tokens whole (up to {peak['max_tokens']}"
        + (f", after the first {peak['context_tokens']} tokens of its prompt" if peak.get("context_tokens") else "")
        + f") on the tuned copy's per-token output and flags it when any window of {' or '.join(map(str, peak['widths']))} tokens "
        f"scores past its threshold (`guard/peak_reading.py`, `manage.py fit_heads {flag}`): {finds}. Fitted on "
        + ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in seen.get("texts", {}).items() if n)
        + f" texts in {seen.get('seconds')} s; its threshold, the {100 * seen.get('benign_quantile', 0.99):.0f}th "
        "percentile of validation harmless texts' peaks, flags on validation texts "
        + ", ".join(f"{kind.replace('_', ' ')} {pct}%" for kind, pct in flagged.items() if pct is not None)
        + ". What it saw:"
    ]
    lines += [""] + _table(["licence", "records"], [[k, v] for k, v in seen.get("licences", {}).items()])
    lines += [""] + _table(["file", "records"], [[k, v] for k, v in seen.get("files", {}).items()])
    return lines


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("–" if v is None else str(v) for v in row) + " |" for row in rows]
    return lines


def section(heads: dict, bench: dict | None, previous: dict | None = None) -> str:
    """The card's heads section; ``previous``: a bench/heads.py run of the heads this model would replace, on the
    same held-out records (a column and a row to compare with)."""
    info = heads["info"]
    lines = [START, "## Latent heads", ""]
    lines.append(
        "Fast verdicts are decided by **latent heads** on the backbone's hidden states (`guard/heads.py`): mean-pooled "
        f"states at layers {', '.join(map(str, heads['layout']['layers']))} (the taps) and "
        f"{heads['layout'].get('similarity_layer', 'the final layer')} (the similarity layer; the forward stops there) of "
        "a plain conversation (no policy in it), task heads for "
        + ", ".join(f"{name} ({heads['tasks'][name]['kind']})" for name in ("prompt", "response", "refusal") if name in heads["tasks"])
        + ", a head per "
        "category of every corpus taxonomy (an operator's category worded like one of them borrows its head), and "
        "zero-shot scores of any other category from its name and description (examples taught in the editor or by "
        "reviews refit it in milliseconds). Reason verdicts explain the heads' labels. Fitted on 2 CPU cores "
        f"with `manage.py fit_heads` in {info.get('fit_seconds')} s from cached features"
        + (f" ({info.get('feature_seconds')} s to compute the new ones at {info.get('feature_tokens_per_second')} tokens/s)."
           if info.get("feature_tokens_per_second") else " (every feature was already in the cache; a cold cache costs about "
           "15-23 minutes for this sample on 2 cores: 908 s at 870 tokens/s on an idle machine, 1,367 s on a fresh one, "
           "measured 2026-12-06).")
    )
    tuned = heads.get("tuned")
    if tuned:
        tuning = tuned.get("info", {})
        lines.append(
            f"\nThe prompt head reads a copy of layers {tuned['cut']}-{tuned['top'] - 1} tuned for prompt harm with a linear head "
            f"(`guard/layer_tuning.py`, `fit_heads --tune-epochs {tuning.get('epochs')}"
            + (f" --tune-copies {tuning['soup_of']}" if tuning.get("soup_of") else "")
            + f"`: {tuning.get('train_prompts')} distinct "
            + (f"prompts, {tuning['soup_of']} copies tuned in different orders and averaged in weight space, "
               if tuning.get("soup_of") else f"prompts, epoch {tuning.get('kept_epoch')} kept by validation AP, ")
            + f"{tuning.get('seconds')} s on 2 CPU cores "
            f"with its layer-{tuned['cut']} states); its weights are `heads/{tuned['file']}`"
            + (f" (each matrix stored as its change from the served layer cut to rank {tuning['rank']} by SVD; the served "
               "layers rebuild the rest when the heads load)" if tuning.get("rank") else "")
            + ", and the features add the copy's mean over the prompt as one more block."
        )
    lines += _peak_lines(heads.get("peak"), "peak head", "prompt", "--add-peak",
                         "it finds a harmful request hidden inside ordinary text, which the mean dilutes")
    lines += _peak_lines(heads.get("response_peak"), "response peak head", "response", "--add-response-peak",
                         "it finds harmful content inside a long ordinary answer, whose middle the features never read")
    lines += ["", f"**Data**: {info.get('fit_records')} records of the training split (`{info.get('data')}`), 80% fitted, "
              f"{info.get('validation_percent')}% to choose and threshold each head (never the held-out split):", ""]
    lines += _table(["licence", "records"], [[k, v] for k, v in info.get("licences", {}).items()])
    lines += [""]
    lines += _table(["file", "records"], [[k, v] for k, v in info.get("files", {}).items()])
    lines += ["", "**Validation choices** (average precision of each candidate on the validation split; the best kept, "
              "its threshold the validation F1 maximum):", ""]
    rows = []
    for task, task_info in info.get("tasks", {}).items():
        validation = task_info.get("validation", {})
        rows.append([task, task_info.get("chosen"), validation.get("n"), validation.get("auroc"), validation.get("f1_at_threshold"),
                     ", ".join(f"{k} {v}" for k, v in task_info.get("candidates", {}).items())])
    lines += _table(["head", "chosen", "validation n", "AUROC", "F1", "candidates (AP)"], rows)
    zs = info.get("zero_shot", {})
    lines += ["", f"Category heads: {info.get('categories', {}).get('heads')} across "
              f"{len(info.get('categories', {}).get('taxonomies', []))} taxonomies. Zero-shot calibration: {zs}.", ""]
    if bench:
        deciders = [d for d in ("logits", "heads") if d in bench["reports"]]
        lines += ["**Held-out figures** (`bench/heads.py`: the held-out split's sample, every record under its own "
                  "taxonomy, fast mode; the same records for both columns; the run is `reports/heads-bench.json`, which "
                  "`bench/heads.py --logits-from` reuses after a refit of the heads alone):", ""]
        # A row's last value is the heads' F1, in a run with or without the logits.
        earlier = {(r[0], r[1]): r[-1] for r in previous["rows"]} if previous else None
        header = ["file", "task", "n", *[f"{d} F1" for d in deciders]] + (["previous heads F1"] if earlier is not None else [])
        lines += _table(header, [list(r) + ([earlier.get((r[0], r[1]))] if earlier is not None else []) for r in bench["rows"]])
        lines += [""]
        rows = []
        runs = [(decider, bench, decider) for decider in deciders] + ([("previous heads", previous, "heads")] if previous else [])
        for label, run, decider in runs:
            cats = run["reports"][decider]["categories"]
            pf = run["policy_following"][decider]
            taught = run["policy_following"].get(decider + "+examples", {})
            rows.append([label, cats.get("micro_f1"), f"{pf['pair_accuracy']}% (code {pf['code_accuracy']}%)",
                         f"{taught.get('pair_accuracy')}% (code {taught.get('code_accuracy')}%)",
                         f"{run['latency_ms'].get(decider)} ({run.get('latency_device', {}).get(decider, 'CPU')})"])
        lines += _table(["decided by", "category micro-F1", "policy-following pairs", "with 8 editor examples",
                         "fast verdict ms (batch 1, median)"], rows)
        lines += ["", "Stacking the label logit into the heads was not adopted: see docs/guard.md."]
    lines += ["", END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--bench", type=Path, default=None)
    parser.add_argument("--previous-bench", type=Path, default=None,
                        help="a bench/heads.py run of the heads this model replaces (the same held-out records)")
    args = parser.parse_args()
    heads = json.loads((args.model / "heads" / "heads.json").read_text())
    bench = json.loads(args.bench.read_text()) if args.bench else None
    previous = json.loads(args.previous_bench.read_text()) if args.previous_bench else None
    card = args.model / "README.md"
    text = card.read_text() if card.exists() else f"# {args.model.name}\n"
    block = section(heads, bench, previous)
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        marker = "\n## Use and licences"
        text = text.replace(marker, "\n" + block + "\n" + marker, 1) if marker in text else text + "\n" + block + "\n"
    card.write_text(text)
    print(f"wrote the heads section of {card}")


if __name__ == "__main__":
    main()
