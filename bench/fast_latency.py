#!/usr/bin/env python
"""The CPU latency of a fast verdict, A/B: two or more models measured in alternating rounds on one machine.

    .venv/bin/python bench/fast_latency.py models/guardsite-guard-270m var/tuned [--rounds 5] [--items 30]

A fast verdict's median moves by 30% between runs on a shared 2-core machine (docs/guard.md), so a
change is compared with its baseline in alternating rounds of ``--items`` ToxicChat prompts each (batch
of one, the general policy, features not cached: ``bench.heads.latency``); the table gives each model's
median of the round medians and the spread of the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.heads import latency  # noqa: E402  (sets Django up)
from guard import runtime  # noqa: E402
from trainer.head_data import heldout_sample  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "data" / "heldout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--items", type=int, default=30)
    args = parser.parse_args()
    prompts = [r.prompt for r in heldout_sample(args.data) if r.file == "toxicchat_train"][: args.items]
    rounds: dict[str, list[float]] = {model: [] for model in args.models}
    for number in range(args.rounds):
        for model in args.models if number % 2 == 0 else reversed(args.models):
            rounds[model].append(latency(model, prompts, heads=True))
    print(f"{'model':40} {'decided by':>10} {'median ms':>9} {'rounds':>24}")
    for model, values in rounds.items():
        decided = getattr(runtime.get_backend(model), "decided_by", "?")
        spread = f"{min(values):.0f}-{max(values):.0f}"
        print(f"{model:40} {decided:>10} {statistics.median(values):9.1f} {spread:>24}")


if __name__ == "__main__":
    main()
