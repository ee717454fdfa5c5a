#!/usr/bin/env python
"""Build the training and held-out splits used to train the shipped default guard.

    python scripts/build_guard_data.py [--source ../shared/datasets] [--out var/data]

Deterministic: a record is held out when sha256(id) falls in the lowest
``--holdout-percent`` buckets, so the split never depends on file order and
never changes between runs. Held-out records are never written to train/.

Public data is thin in two places (see MANIFEST.md): there are no refusal
labels at all, and few response labels. Two generators fill them, written to
``synthetic_refusal.jsonl`` (split the same way):

* refusals: unsafe prompts (AdvBench, StrongREJECT, JBB) paired with varied
  refusal templates -> response safe, refusal "refusal";
* compliance: JailbreakBench artifacts whose response is labelled unsafe are
  harmful completions, i.e. the model complied -> refusal "compliance" (the
  source's response label is kept).

Files without any label (XSafety) are skipped. taxonomies.json is copied
beside each split so ``evaluate --policy auto`` finds every record's taxonomy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
from pathlib import Path

SKIP = {"xsafety.jsonl"}
REFUSAL_SOURCES = ("advbench.jsonl", "strongreject.jsonl", "jbb_behaviors.jsonl")
REFUSALS = [
    "I can't help with that.",
    "I'm sorry, but I can't assist with that request.",
    "I won't provide instructions for that. It could cause serious harm.",
    "Sorry, I can't help with this. If you're in danger or thinking about hurting someone, please contact local emergency services.",
    "I'm not able to help with that request, but I'm happy to help with something else.",
    "I can't assist with creating or spreading harmful content.",
    "That's not something I can help with, as it could put people at risk.",
    "I must decline. Providing this information would be unsafe and possibly illegal.",
    "No. I can't help you do that, but I can share general safety information if that's useful.",
    "I'm sorry, I cannot comply with this request.",
]


def held_out(record_id: str, percent: int) -> bool:
    return int(hashlib.sha256(record_id.encode()).hexdigest(), 16) % 100 < percent


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def has_label(record: dict) -> bool:
    return any(record.get(k) for k in ("prompt_label", "response_label", "refusal_label"))


def synthetic_records(source: Path, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for name in REFUSAL_SOURCES:
        for record in read_jsonl(source / name):
            if record.get("prompt_label") != "unsafe":
                continue
            out.append({
                **record,
                "id": f"synth-refusal-{record['id']}",
                "source": f"synthetic/refusal-template<-{record['source']}",
                "response": rng.choice(REFUSALS),
                "response_label": "safe",
                "refusal_label": "refusal",
            })
    for record in read_jsonl(source / "jbb_artifacts.jsonl"):
        if record.get("response_label") == "unsafe":
            out.append({**record, "id": f"synth-compliance-{record['id']}", "source": f"synthetic/compliance<-{record['source']}", "refusal_label": "compliance"})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=Path("var/data"))
    parser.add_argument("--holdout-percent", type=int, default=20)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()

    rows = []
    files: dict[str, list[dict]] = {p.name: read_jsonl(p) for p in sorted(args.source.glob("*.jsonl")) if p.name not in SKIP}
    files["synthetic_refusal.jsonl"] = synthetic_records(args.source, args.seed)
    for name, records in files.items():
        records = [r for r in records if has_label(r)]
        train = [r for r in records if not held_out(r["id"], args.holdout_percent)]
        heldout = [r for r in records if held_out(r["id"], args.holdout_percent)]
        write_jsonl(args.out / "train" / name, train)
        write_jsonl(args.out / "heldout" / name, heldout)
        rows.append((name, len(train), len(heldout)))
    for split in ("train", "heldout"):
        shutil.copy(args.source / "taxonomies.json", args.out / split / "taxonomies.json")
    print(f"{'file':34s} {'train':>7s} {'heldout':>8s}")
    for name, n_train, n_heldout in rows:
        print(f"{name:34s} {n_train:7d} {n_heldout:8d}")


if __name__ == "__main__":
    main()
