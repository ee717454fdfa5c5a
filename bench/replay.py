#!/usr/bin/env python
"""How long "Try the draft on recent traffic" takes, and what a zero-shot category does to real traffic.

The replay's judging step (``moderation.replay.judge``) on held-out ToxicChat prompts standing in for a
policy's recent items: the General preset as the live version, the same plus an operator's "Fortune
telling" as the draft, judged by the deployment's default guard (the shipped heads) in fast mode. The
same items judged under the live version twice show what the draft itself costs beside the forward.

    .venv/bin/python bench/replay.py [--items 250] [--data var/data/heldout/toxicchat_train.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path
from types import SimpleNamespace

from django_setup import ROOT

from guard import runtime
from guard.contract import CategorySpec, PolicySpec
from moderation.replay import judge
from policies.presets import GENERAL_CATEGORIES

FORTUNE = CategorySpec(code="S99", name="Fortune telling", description="horoscopes, tarot readings or predictions of a person's future")


class _NoDecisions:
    def all(self) -> list:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=250)
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "data" / "heldout" / "toxicchat_train.jsonl")
    args = parser.parse_args()

    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(1).shuffle(rows)
    # Stand-ins for moderation items: what ``judge`` reads of one (no review decisions).
    items = [SimpleNamespace(pk=k, prompt=r["prompt"], response=r.get("response"), has_response=bool(r.get("response")),
                             decisions=_NoDecisions()) for k, r in enumerate(rows[: args.items])]
    live = PolicySpec(name="General", categories=tuple(CategorySpec(code=c, name=n, description=d) for c, n, d in GENERAL_CATEGORIES))
    draft = PolicySpec(name="General", categories=(*live.categories, FORTUNE))
    runtime.get_backend(None)  # loading the model is not the replay's time

    print(f"{len(items)} prompts of {args.data.name}, {os.cpu_count()} CPU cores\n")
    print("| run | seconds | items/s | newly unsafe | newly safe | other codes |")
    print("|---|---|---|---|---|---|")
    for name, second in (("live vs draft (first)", draft), ("live vs live", live), ("live vs draft (again)", draft)):
        started = time.perf_counter()
        judged = judge(items, live, second, None)  # type: ignore[arg-type]
        seconds = time.perf_counter() - started
        counts = [sum(j.change == kind for j in judged) for kind in ("newly unsafe", "newly safe", "other codes")]
        print(f"| {name} | {seconds:.1f} | {len(items) / seconds:.1f} | " + " | ".join(map(str, counts)) + " |")
    print("\nnewly unsafe with the draft:")
    for j in judged:
        if j.change:
            print(f"  {j.change}: {', '.join(j.live.categories) or 'safe'} -> {', '.join(j.draft.categories)}: {' '.join(j.item.prompt.split())[:100]}")


if __name__ == "__main__":
    main()
