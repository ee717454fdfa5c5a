"""Guard throughput: fast-mode verdicts/s by batch size, reason-mode latency per item.

Uses the transformers backend with the embedded model (or ``--model``) on
real items of the shared corpus (prompt-only and prompt+response, MLCommons
hazards policy) and prints a small table.

    .venv/bin/python bench/guard_throughput.py                                  # CPU: batch 1, 8, 32; 10 reason items
    .venv/bin/python bench/guard_throughput.py --device cuda --batch-sizes 1,64,512
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardsite.settings")

FILES = ("jbb_behaviors.jsonl", "jbb_artifacts.jsonl", "toxicchat_train.jsonl", "openai_moderation_train.jsonl", "aart.jsonl")


def load_items(directory: Path, count: int) -> list[dict]:
    """``count`` records, round-robin over FILES (deterministic), each with a non-empty prompt."""
    per_file: list[list[dict]] = []
    for name in FILES:
        path = directory / name
        if not path.exists():
            continue
        rows = []
        with path.open() as handle:
            for line in handle:
                record = json.loads(line)
                if (record.get("prompt") or "").strip():
                    rows.append(record)
                if len(rows) >= count:
                    break
        per_file.append(rows)
    items: list[dict] = []
    index = 0
    while len(items) < count and any(index < len(rows) for rows in per_file):
        for rows in per_file:
            if index < len(rows) and len(items) < count:
                items.append(rows[index])
        index += 1
    if not items:
        raise SystemExit(f"no items found in {directory}")
    return items


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="embedded (default), a model version name or a directory")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--items", type=int, default=0, help="items judged at every batch size (default: the largest batch size, at least 16)")
    parser.add_argument("--reason-items", type=int, default=10)
    parser.add_argument("--policy", default="mlcommons_hazards", help="preset name")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this file")
    args = parser.parse_args()

    import django

    django.setup()
    import torch
    from django.conf import settings

    if args.threads:
        torch.set_num_threads(args.threads)

    from guard.backends.base import GuardRequest
    from guard.backends.transformers_backend import TransformersBackend
    from guard.runtime import resolve_model
    from policies import presets

    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    spec = presets.preset_spec(args.policy)
    resolved = resolve_model(args.model)
    started = time.perf_counter()
    backend = TransformersBackend(
        resolved.base_path, resolved.adapter_path, device=args.device, label=resolved.label, max_batch_size=max(batch_sizes)
    )
    load_s = time.perf_counter() - started
    total = args.items or max(max(batch_sizes), 16)
    records = load_items(Path(settings.SHARED_DATASETS_DIR), max(total, args.reason_items))

    def request(record: dict, mode: str) -> GuardRequest:
        return GuardRequest(policy=spec, prompt=record["prompt"], response=record.get("response"), mode=mode)

    prepared = [backend.prepare(request(r, "fast")) for r in records[:total]]
    token_counts = [len(p.input_ids) for p in prepared]
    head = max(p.head_len for p in prepared)
    backend.classify_batch([request(records[0], "fast")])  # warm-up

    default_tokens = backend.max_batch_tokens
    rows = []
    # Each batch size alone (no token budget), then the default batching: the
    # largest batch size capped at max_batch_tokens padded tokens per forward.
    settings_to_run = [(size, 10**9, str(size)) for size in batch_sizes]
    settings_to_run.append((max(batch_sizes), default_tokens, f"<={max(batch_sizes)}, {default_tokens} tok"))
    for size, token_budget, label in settings_to_run:
        backend.max_batch_size = size
        backend.max_batch_tokens = token_budget
        batch = [request(records[i % len(records)], "fast") for i in range(total)]
        if backend.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        verdicts = backend.classify_batch(batch)
        if backend.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        assert len(verdicts) == total
        rows.append({"mode": "fast", "batch": label, "items": total, "seconds": seconds, "verdicts_per_s": total / seconds})

    backend.max_batch_size = 1
    latencies = []
    words = []
    for record in records[: args.reason_items]:
        started = time.perf_counter()
        verdict = backend.classify_batch([request(record, "reason")])[0]
        latencies.append(time.perf_counter() - started)
        words.append(verdict.explanation_words)

    print(f"guard throughput — model {resolved.label}, device {backend.device} ({backend.dtype}), torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    load1, load5, _ = os.getloadavg()
    print(f"cpus {os.cpu_count()}, load average {load1:.1f}/{load5:.1f} (other processes share the CPU)")
    print(
        f"model load {load_s:.1f}s; input tokens per item: mean {statistics.mean(token_counts):.0f}, "
        f"max {max(token_counts)}, of which {head} policy head (computed once, cached)"
    )
    print()
    print(f"{'mode':<8}{'batch':>18}{'items':>7}{'seconds':>10}{'verdicts/s':>12}")
    for row in rows:
        print(f"{row['mode']:<8}{row['batch']:>18}{row['items']:>7}{row['seconds']:>10.2f}{row['verdicts_per_s']:>12.2f}")
    p50, p90 = percentile(latencies, 0.5), percentile(latencies, 0.9)
    print()
    print(f"{'mode':<8}{'items':>7}{'p50 s':>9}{'p90 s':>9}{'mean words':>12}")
    print(f"{'reason':<8}{len(latencies):>7}{p50:>9.2f}{p90:>9.2f}{statistics.mean(words):>12.1f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "model": resolved.label,
                    "device": str(backend.device),
                    "fast": rows,
                    "reason": {"items": len(latencies), "p50_s": p50, "p90_s": p90, "latencies_s": latencies},
                    "mean_input_tokens": statistics.mean(token_counts),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
