#!/usr/bin/env python
"""Latent heads vs label logits on the held-out split: F1 per file and task, categories, policy
following, feature throughput, fit time, memory and the latency of a fast verdict (batch 1,
median), recorded with the device it ran on (``latency_device``: "CPU" or the GPU's name).

    .venv/bin/python scripts/build_guard_data.py --out var/data        # once: the splits
    .venv/bin/python bench/heads.py [--model models/guardsite-guard-270m] [--data var/data/heldout]

The held-out sample is ``trainer.head_data.heldout_sample`` (all ToxicChat and OpenAI
Moderation held-out records, up to 60 per label of every other file); every record is
judged under its own taxonomy (``--policy auto``) by ``evaluation.harness.evaluate``, once
deciding with the label logits and once with the heads. Figures go in the closing note and
the model card (``--out`` writes the JSON).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

from django.conf import settings
from django_setup import ROOT

from evaluation.harness import evaluate
from evaluation.policy_following import evaluate_policy_following
from guard import runtime
from guard.backends.base import GuardRequest
from policies import presets
from trainer.head_data import heldout_sample

TASKS = ("prompt", "response", "refusal")
TOXICCHAT = ("toxicchat_train.jsonl", "toxicchat_train_extra.jsonl")


def f1_of(counts: list[dict]) -> float | None:
    tp = sum(c.get("tp", 0) for c in counts)
    fp = sum(c.get("fp", 0) for c in counts)
    fn = sum(c.get("fn", 0) for c in counts)
    return round(200 * tp / (2 * tp + fp + fn), 1) if tp + fp + fn else None


def run(model: str, data: Path, ids: set[str], heads: bool) -> dict:
    files = sorted(data.glob("*.jsonl"))
    return evaluate(files, model, mode="fast", policy="auto", batch_size=32,
                    record_filter=lambda record: record.id in ids, heads=heads)


def pairs(model: str, heads: bool, with_examples: bool = False) -> dict:
    return evaluate_policy_following(
        model, batch_size=32, classify=lambda requests, name: runtime.classify(requests, name, heads=heads),
        with_examples=with_examples,
    )


def latency(model: str, prompts: list[str], heads: bool) -> float:
    """Median ms of one fast verdict (batch of one) under the general policy, features not cached."""
    settings.GUARD_FEATURE_CACHE_IN_SERVING = False
    spec = presets.preset_spec("general")
    runtime.classify([GuardRequest(spec, "warm up")], model, heads=heads)
    times = []
    for prompt in prompts:
        started = time.perf_counter()
        runtime.classify([GuardRequest(spec, prompt)], model, heads=heads)
        times.append(1000 * (time.perf_counter() - started))
    settings.GUARD_FEATURE_CACHE_IN_SERVING = True
    return round(statistics.median(times), 1)


def device_label(model: str) -> str:
    """Where the verdicts ran: "CPU", or the GPU's name (a GPU session's run is not a CPU latency)."""
    device = getattr(getattr(runtime.get_backend(model), "runner", None), "device", "cpu")
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device)
    return "CPU"


def teaching_seconds(model: str) -> float:
    """The slowest refit of a taught policy: its examples embedded and every taught category's head fitted
    (what a policy with 8 editor examples per category costs the first verdict that sees it)."""
    from evaluation.policy_following import _spec, load_pairs, taught

    backend = runtime.get_backend(model)
    settings.GUARD_FEATURE_CACHE_IN_SERVING = False  # the examples' features computed, not read from disk
    slowest = 0.0
    for pair in taught(load_pairs())[::6]:
        backend._text_vectors.clear()
        backend._views.clear()
        started = time.perf_counter()
        backend.policy_view(_spec(pair["covering_policy"]))
        slowest = max(slowest, time.perf_counter() - started)
    settings.GUARD_FEATURE_CACHE_IN_SERVING = True
    return round(slowest, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "guardsite-guard-270m"))
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "data" / "heldout")
    parser.add_argument("--no-logits", action="store_true", help="measure the heads only")
    parser.add_argument("--logits-from", type=Path, default=None,
                        help="take the logits' figures from an earlier --out (the same model and records: 20 min saved)")
    parser.add_argument("--latency-items", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    settings.GUARD_FEATURE_CACHE_IN_SERVING = True
    sample = heldout_sample(args.data)
    ids = {r.id for r in sample}
    deciders = ["heads"] if args.no_logits else ["logits", "heads"]
    reports, following, latencies, devices = {}, {}, {}, {}
    if args.logits_from:
        earlier = json.loads(args.logits_from.read_text())
        reports["logits"] = earlier["reports"]["logits"]
        following.update({k: v for k, v in earlier["policy_following"].items() if k.startswith("logits")})
        latencies["logits"] = earlier["latency_ms"]["logits"]
        devices["logits"] = earlier.get("latency_device", {}).get("logits", "CPU")
        deciders = ["logits", "heads"]
    for decider in [d for d in deciders if d not in reports]:
        started = time.perf_counter()
        reports[decider] = run(args.model, args.data, ids, decider == "heads")
        following[decider] = pairs(args.model, decider == "heads")
        following[decider + "+examples"] = pairs(args.model, decider == "heads", with_examples=True)
        print(f"{decider}: judged {reports[decider]['n']} records + {following[decider]['n']} pairs in {time.perf_counter() - started:.0f} s",
              flush=True)
    latency_prompts = [r.prompt for r in sample if r.file == "toxicchat_train"][: args.latency_items]
    for decider in [d for d in deciders if d not in latencies]:
        latencies[decider] = latency(args.model, latency_prompts, decider == "heads")
        devices[decider] = device_label(args.model)

    rows = []
    files = sorted(reports[deciders[-1]]["files"])
    for name in files:
        for task in TASKS:
            cells = [reports[d]["files"].get(name, {}).get(task, {}) for d in deciders]
            if not cells[-1].get("n"):
                continue
            rows.append((name, task, cells[-1]["n"], *[c.get("f1") for c in cells]))
    for task in TASKS:
        cells = [[reports[d]["files"].get(n, {}).get(task, {}) for n in TOXICCHAT] for d in deciders]
        if any(c.get("n") for c in cells[-1]):
            rows.append(("ToxicChat (both files)", task, sum(c.get("n", 0) for c in cells[-1]), *[f1_of(c) for c in cells]))
    for task in TASKS:
        rows.append(("ALL", task, reports[deciders[-1]]["tasks"][task]["n"], *[reports[d]["tasks"][task]["f1"] for d in deciders]))
    header = f"{'file':32} {'task':9} {'n':>5} " + " ".join(f"{d + ' F1':>10}" for d in deciders)
    print(header)
    print("-" * len(header))
    for name, task, n, *values in rows:
        print(f"{name:32} {task:9} {n:>5} " + " ".join(f"{'–' if v is None else v:>10}" for v in values))
    print()
    for decider in deciders:
        cats = reports[decider]["categories"]
        pf, taught = following[decider], following[decider + "+examples"]
        print(f"{decider:7} category micro-F1 {cats['micro_f1']:5}  macro {cats['macro_f1']:5}  | policy-following pairs "
              f"{pf['pair_accuracy']}% (code {pf['code_accuracy']}%, covering {pf['covering_accuracy']}%, other {pf['other_accuracy']}%)"
              f"; with 8 editor examples {taught['pair_accuracy']}% (code {taught['code_accuracy']}%)"
              f"  | fast verdict {latencies[decider]} ms median (batch 1, {devices[decider]})")
    backend = runtime.get_backend(args.model)
    heads = getattr(backend, "heads", None)
    if heads is not None:
        info = heads.info
        print(f"heads: fitted on {info.get('fit_records')} records; features {info.get('feature_seconds')} s "
              f"({info.get('feature_tokens_per_second')} tokens/s over the texts not yet cached); fit {info.get('fit_seconds')} s")
    print(f"refit of a taught policy (8 examples, embedded and fitted): {teaching_seconds(args.model)} s at most")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"reports": reports, "policy_following": following, "latency_ms": latencies,
                                        "latency_device": devices,
                                        "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
