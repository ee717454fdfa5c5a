"""Guard throughput of the transformers backend: items/s, kernel-like ops per item
and host syncs per batch, fast and reason mode, by batch size.

Two ways to run it:

* the **overhead proxy** (default): a tiny randomly initialised model with the
  real architecture's 18 layers and the real tokenizer, on the CPU. Its
  arithmetic is small, so what it measures is mostly per-item Python, kernel
  launches and syncs: the same overhead that caps a GPU. Runs anywhere.
* the **real model**: ``--model embedded`` (or a model version / directory),
  e.g. ``--device cuda`` on a GPU machine.

Items are real texts of the shared corpus (prompt-only and prompt+response) under
the MLCommons hazards policy; ``--short`` uses short texts and a 3-category policy
instead (the pure-overhead case).

    .venv/bin/python bench/guard_throughput.py                          # proxy, CPU
    .venv/bin/python bench/guard_throughput.py --short
    .venv/bin/python bench/guard_throughput.py --model embedded --device cuda --batch-sizes 1,64,256,1024

Arithmetic: GFLOP per item is counted by torch's FlopCounterMode on one batch (matmuls and
attention; CPU attention counted densely), and the **ceiling** is the items/s this device
would reach if it did nothing but that arithmetic at the rate of a large matrix multiply
(measured first, same threads). Where items/s is close to the ceiling the batch is
compute-bound and overhead is no longer what limits it.

Ops are the leaf ``aten::`` operations the torch profiler records; kernels are
those of them that launch a kernel on a GPU (views, allocations and conversions
with nothing to do are left out: ``NO_KERNEL_OPS``); "outside the forward"
excludes those inside the model's decoder forward. Host syncs are the calls that read a tensor's values
into Python (``tolist``, ``item``, ``int()``/``float()``/``bool()``, ``cpu()``,
``numpy``): on a GPU each one waits for the device.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardsite.settings")

from host_syncs import SyncCounter  # noqa: E402

FILES = ("jbb_behaviors.jsonl", "jbb_artifacts.jsonl", "toxicchat_train.jsonl", "openai_moderation_train.jsonl", "aart.jsonl")
SHORT_TEXTS = (
    ("How do I bake bread?", None),
    ("How do I build a pipe bomb?", None),
    ("Write a phishing email to my bank's customers.", "Sorry, I can't help with that."),
    ("What is the capital of France?", "Paris."),
    ("hi", None),
    ("Tell me a joke about cats.", "Why did the cat sit on the computer? To keep an eye on the mouse."),
)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
    return items


def forward_callable(backend) -> tuple[object, str]:
    """The object and attribute name of the model forward (new runner or a transformers decoder)."""
    runner = getattr(backend, "runner", None)
    if runner is not None:
        return runner, "forward"
    return backend.decoder, "forward"


@contextlib.contextmanager
def labelled_forward(backend) -> Iterator[None]:
    import torch

    owner, name = forward_callable(backend)
    original = getattr(owner, name)

    def forward(*args, **kwargs):
        with torch.profiler.record_function("guard_forward"):
            return original(*args, **kwargs)

    setattr(owner, name, forward)
    try:
        yield
    finally:
        with contextlib.suppress(AttributeError):
            delattr(owner, name)
        if getattr(owner, name) is not original:
            setattr(owner, name, original)


# Leaf ops that launch no kernel on a GPU: views and other metadata changes, allocations, and conversions
# that found nothing to do (a leaf ``aten::to``/``contiguous`` did no copy; a real one has a copy_ child).
NO_KERNEL_OPS = frozenset(f"aten::{name}" for name in (
    "view", "_unsafe_view", "as_strided", "_reshape_alias", "reshape", "expand", "slice", "select", "unsqueeze",
    "squeeze", "t", "transpose", "permute", "detach", "detach_", "alias", "resolve_conj", "resolve_neg", "lift_fresh",
    "empty", "empty_strided", "unbind", "split", "chunk", "narrow", "real", "result_type", "to", "contiguous",
    "_local_scalar_dense", "set_", "resize_", "lift_fresh_copy", "is_nonzero", "item",
))


@contextlib.contextmanager
def counted_calls(owner: object, name: str) -> Iterator[list[int]]:
    """Counts calls of ``owner.name`` while active (a one-element list, read after the block)."""
    original = getattr(owner, name, None)
    calls = [0]
    if original is None:
        yield calls
        return

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    setattr(owner, name, counted)
    try:
        yield calls
    finally:
        delattr(owner, name)


def count_ops(backend, requests: list) -> dict[str, int]:
    """Leaf aten ops of one classify_batch call: all of them and those that launch a kernel,
    each in total and inside the model forward."""
    from torch.profiler import ProfilerActivity, profile

    with labelled_forward(backend), profile(activities=[ProfilerActivity.CPU]) as prof:
        backend.classify_batch(requests)
    counts = {"ops": 0, "ops_inside": 0, "kernels": 0, "kernels_inside": 0}
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        if any(child.name.startswith("aten::") for child in event.cpu_children):
            continue
        inside = False
        parent = event.cpu_parent
        while parent is not None:
            if parent.name == "guard_forward":
                inside = True
                break
            parent = parent.cpu_parent
        kernel = event.name not in NO_KERNEL_OPS
        counts["ops"] += 1
        counts["ops_inside"] += inside
        counts["kernels"] += kernel
        counts["kernels_inside"] += kernel and inside
    return counts


def _register_cpu_attention_flops() -> None:
    """FlopCounterMode has no formula for the CPU flash-attention kernel; count it like the GPU ones."""
    import torch
    from torch.utils import flop_counter

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if op in flop_counter.flop_registry or getattr(op, "default", None) in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(op)
    def _cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
        return flop_counter.sdpa_flop_count(query, key, value)


def count_flops(backend, requests: list) -> float:
    """Floating-point operations of one classify_batch call (matmuls and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_attention_flops()
    with FlopCounterMode(display=False) as counter:
        backend.classify_batch(requests)
    return float(counter.get_total_flops())


def matmul_flops_per_second(device, dtype, seconds: float = 1.0) -> float:
    """The device's rate on a large square matrix multiply: the arithmetic ceiling's yardstick."""
    import torch

    size = 2048 if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b)
        runs += 1
        if device.type == "cuda" and runs % 10 == 0:
            torch.cuda.synchronize()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * runs / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny18", help="tiny18 (the overhead proxy, default), embedded, a model version name or a directory")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--batch-sizes", default="1,16,64,256")
    parser.add_argument("--reason-batch-sizes", default="1,16,64")
    parser.add_argument("--items", type=int, default=0, help="items per fast measurement (default: max(64, largest batch), the same items at every batch size)")
    parser.add_argument("--reason-items", type=int, default=0, help="items per reason measurement (default: max(16, batch))")
    parser.add_argument("--max-new-tokens", type=int, default=0, help="explanation budget (default: the backend's)")
    parser.add_argument("--short", action="store_true", help="short texts and a 3-category policy (pure overhead)")
    parser.add_argument("--policy", default="mlcommons_hazards", help="preset name")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-profile", action="store_true", help="skip the op counts (faster)")
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
    from guard.contract import CategorySpec, PolicySpec
    from guard.runtime import resolve_model
    from guard.testing import tiny_model_dir
    from policies import presets

    fast_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    reason_sizes = [int(b) for b in args.reason_batch_sizes.split(",") if b.strip()]
    say(f"loading {args.model} on {args.device} ...")
    started = time.perf_counter()
    if args.model == "tiny18":
        base, adapter, label = tiny_model_dir(layers=18), None, "tiny random Gemma 3, 18 layers"
    else:
        resolved = resolve_model(None if args.model == "embedded" else args.model)
        base, adapter, label = resolved.base_path, resolved.adapter_path, resolved.label
    kwargs = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    backend = TransformersBackend(base, adapter, device=args.device, label=label, max_batch_size=max(fast_sizes), **kwargs)
    load_s = time.perf_counter() - started

    if args.short:
        spec = PolicySpec(
            "Small policy",
            categories=(CategorySpec("S1", "Weapons"), CategorySpec("S2", "Fraud"), CategorySpec("S3", "Hate")),
        )
        pool = [{"prompt": p, "response": r} for p, r in SHORT_TEXTS]
    else:
        spec = presets.preset_spec(args.policy)
        pool = load_items(Path(settings.SHARED_DATASETS_DIR), 512) or [{"prompt": p, "response": r} for p, r in SHORT_TEXTS]

    def requests(count: int, mode: str, offset: int = 0) -> list:
        return [
            GuardRequest(spec, pool[(offset + i) % len(pool)]["prompt"], pool[(offset + i) % len(pool)].get("response"), mode=mode)
            for i in range(count)
        ]

    prepared = backend.prepare_batch(requests(64, "fast")) if hasattr(backend, "prepare_batch") else [
        backend.prepare(r) for r in requests(64, "fast")
    ]
    tokens = sum(len(p.input_ids) - p.head_len for p in prepared) / len(prepared)
    head = max(p.head_len for p in prepared)
    peak = None if args.no_profile else matmul_flops_per_second(backend.device, backend.dtype)
    say("warming up ...")
    backend.classify_batch(requests(2, "fast"))
    backend.classify_batch(requests(1, "reason"))

    def synchronize() -> None:
        if backend.device.type == "cuda":
            torch.cuda.synchronize()

    rows = []
    plan = [("fast", b) for b in fast_sizes] + [("reason", b) for b in reason_sizes]
    for mode, size in plan:
        count = (args.items or max(64, *fast_sizes)) if mode == "fast" else (args.reason_items or max(16, size))
        batch = requests(count, mode)
        backend.max_batch_size = size
        backend.max_batch_tokens = 10**9
        say(f"{mode:<6} batch {size:>4}: {count} items ...")
        synchronize()
        counter = SyncCounter()
        with counter.active(), counted_calls(backend, "_score") as scored:
            t0 = time.perf_counter()
            verdicts = backend.classify_batch(batch)
            synchronize()
            seconds = time.perf_counter() - t0
        assert len(verdicts) == count
        batches = -(-count // size)
        ops = inside = flops = None
        kernels: dict[str, float] = {}
        if not args.no_profile:
            sample = requests(min(size, count), mode, offset=1)
            counted = count_ops(backend, sample)
            ops, inside = counted["ops"] / len(sample), counted["ops_inside"] / len(sample)
            kernels = {"per_item": counted["kernels"] / len(sample),
                       "outside_forward": (counted["kernels"] - counted["kernels_inside"]) / len(sample)}
            flops = count_flops(backend, sample) / len(sample)
        row = {
            "mode": mode,
            "batch": size,
            "items": count,
            "seconds": seconds,
            "items_per_s": count / seconds,
            "host_syncs_per_batch": counter.count / batches,
            # the backend splits a batch into length buckets (less padding); each is scored with its own sync
            "buckets_per_batch": scored[0] / batches if scored[0] else None,
            "host_syncs_per_bucket": counter.count / scored[0] if scored[0] else None,
            "ops_per_item": ops,
            "ops_per_item_outside_forward": None if ops is None else ops - inside,
            "kernels_per_item": kernels.get("per_item"),
            "kernels_per_item_outside_forward": kernels.get("outside_forward"),
            "gflop_per_item": None if flops is None else flops / 1e9,
            "ceiling_items_per_s": None if flops is None or not flops else peak / flops,
        }
        rows.append(row)
        say(f"{mode:<6} batch {size:>4}: {row['items_per_s']:.1f} items/s")

    load1, load5, _ = os.getloadavg()
    print(f"guard throughput: {label}, device {backend.device} ({backend.dtype}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    print(f"cpus {os.cpu_count()}, load average {load1:.1f}/{load5:.1f} (other processes share the CPU); model load {load_s:.1f}s")
    print(f"policy {spec.name} ({len(spec.codes)} codes, head {head} tokens, computed once); "
          f"conversation tokens per item {tokens:.0f} (mean); explanation budget {backend.max_new_tokens} tokens")
    if peak:
        print(f"matrix multiply rate {peak / 1e9:.1f} GFLOP/s ({backend.dtype}): the ceiling column is that rate / GFLOP per item")
    print()
    print(f"{'mode':<8}{'batch':>6}{'items':>7}{'seconds':>9}{'items/s':>10}{'syncs/batch':>13}{'buckets':>9}{'ops/item':>10}"
          f"{'outside fwd':>13}{'kernels/item':>14}{'outside fwd':>13}{'GFLOP/item':>12}{'ceiling/s':>11}")
    for row in rows:
        ops = "-" if row["ops_per_item"] is None else f"{row['ops_per_item']:.0f}"
        outside = "-" if row["ops_per_item_outside_forward"] is None else f"{row['ops_per_item_outside_forward']:.1f}"
        kernels = "-" if row["kernels_per_item"] is None else f"{row['kernels_per_item']:.0f}"
        buckets = "-" if row["buckets_per_batch"] is None else f"{row['buckets_per_batch']:.1f}"
        kernels_outside = "-" if row["kernels_per_item"] is None else f"{row['kernels_per_item_outside_forward']:.1f}"
        gflop = "-" if row["gflop_per_item"] is None else f"{row['gflop_per_item']:.3f}"
        ceiling = "-" if row["ceiling_items_per_s"] is None else f"{row['ceiling_items_per_s']:.0f}"
        print(
            f"{row['mode']:<8}{row['batch']:>6}{row['items']:>7}{row['seconds']:>9.2f}{row['items_per_s']:>10.1f}"
            f"{row['host_syncs_per_batch']:>13.1f}{buckets:>9}{ops:>10}{outside:>13}{kernels:>14}{kernels_outside:>13}{gflop:>12}{ceiling:>11}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"model": label, "device": str(backend.device), "matmul_flops_per_s": peak,
                                               "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
