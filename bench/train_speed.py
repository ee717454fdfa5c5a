"""Training speed: steps/s of each recipe on this machine (CPU or GPU), LoRA by default.

Runs ``trainer.recipes.run`` for a few steps per configuration on a fixed slice of
the shared corpus and prints a small table: model, recipe, batch, mean tokens per
training sequence, steps/s, seconds/step, adapter size, peak GPU memory (GPU only)
and the last loss/reward. The first step includes warm-up; the figure is the mean
over all steps.

    .venv/bin/python bench/train_speed.py                        # tiny model: sft, grpo, dpo
    .venv/bin/python bench/train_speed.py --model embedded --recipes sft grpo --steps 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import django_setup  # noqa: F401  (sys.path, settings, django.setup())
from django.conf import settings
from host_syncs import SyncCounter

from trainer import callbacks, model_loading, recipes

DATA = ("jbb_behaviors.jsonl", "toxicchat_train.jsonl", "jbb_artifacts.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny (the test model), embedded, or a model directory")
    parser.add_argument("--recipes", nargs="+", default=["sft", "grpo", "dpo"], choices=recipes.RECIPES)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-text-tokens", type=int, default=256)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=96)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--sync-callers", action="store_true", help="also list where the host syncs come from")
    parser.add_argument("--logging-steps", type=int, default=10, help="as on a GPU (the CPU default logs every step)")
    args = parser.parse_args()

    if args.model == "tiny":
        from guard.testing import tiny_model_dir

        base = str(tiny_model_dir())
    else:
        base = args.model
    data = [str(Path(settings.SHARED_DATASETS_DIR) / name) for name in DATA]
    rows = []
    base_callback = callbacks.trainer_callback_base()

    class StepSyncs(base_callback):  # type: ignore[misc, valid-type]
        """Counts host syncs from the first step to the end of training (steps and their logging, not data
        building or model loading)."""

        def __init__(self) -> None:
            self.counter = SyncCounter(record_callers=args.sync_callers)
            self.steps = 0

        def on_step_begin(self, args, state, control, **kwargs) -> None:  # noqa: ANN001
            self.counter.start()

        def on_step_end(self, args, state, control, **kwargs) -> None:  # noqa: ANN001
            self.steps += 1

        def on_train_end(self, args, state, control, **kwargs) -> None:  # noqa: ANN001
            self.counter.stop()

    with tempfile.TemporaryDirectory() as work:
        for recipe in args.recipes:
            train_settings = recipes.TrainSettings(
                recipe=recipe, data=data, out_dir=str(Path(work) / recipe), base=base, max_steps=args.steps,
                batch_size=args.batch_size, max_examples=64, max_text_tokens=args.max_text_tokens,
                lora_rank=args.lora_rank, num_generations=args.num_generations,
                max_completion_length=args.max_completion_length, save_steps=10_000, dpo_prompts=4,
                dpo_samples=args.num_generations, dpo_gold_fallback=True, logging_steps=args.logging_steps,
            )
            syncs = StepSyncs()
            outcome = recipes.run(train_settings, callbacks=[syncs], log=lambda message: print(message, file=sys.stderr))
            summary = outcome.summary
            last = outcome.history[-1] if outcome.history else {}
            for caller, n in syncs.counter.callers.most_common(8):
                print(f"  {recipe} syncs: {n / max(1, syncs.steps):6.2f}/step at {caller}", file=sys.stderr)
            rows.append((
                args.model, recipe, args.batch_size, summary["steps_per_second"],
                1 / summary["steps_per_second"] if summary["steps_per_second"] else float("nan"),
                summary["model_bytes"] / 1e6, summary.get("max_gpu_memory_bytes", 0) / 2**30,
                last.get("loss"), last.get("reward"), syncs.counter.count / max(1, syncs.steps),
            ))
    device = model_loading.device_info()
    print(f"\ndevice {device['device']} · torch threads {device['threads']} · load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':10} {'recipe':6} {'batch':>5} {'steps/s':>8} {'s/step':>7} {'adapter MB':>10} {'GPU GiB':>8} {'loss':>8} {'reward':>7} {'syncs/step':>10}")
    for model, recipe, batch, sps, sec, mb, gib, loss, reward, step_syncs in rows:
        loss_text = f"{loss:8.3f}" if isinstance(loss, float) else f"{'-':>8}"
        reward_text = f"{reward:7.3f}" if isinstance(reward, float) else f"{'-':>7}"
        print(f"{model:10} {recipe:6} {batch:5d} {sps:8.3f} {sec:7.2f} {mb:10.2f} {gib:8.2f} {loss_text} {reward_text} {step_syncs:10.1f}")


if __name__ == "__main__":
    main()
