"""``python manage.py train``: run a recipe in this process (no queue, no job record).

Writes the adapter (or full model) to ``OUT/adapter`` (``OUT/model``), the
held-out records to ``OUT/heldout``, and the loss/reward history, data mix,
timing and provenance to ``OUT/train_metrics.json``.
"""

from __future__ import annotations

import os
from argparse import ArgumentParser
from typing import Any

# See trainer/tasks.py: a spinning OpenMP runtime is very slow on a shared CPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from django.core.management.base import BaseCommand, CommandError  # noqa: E402


class Command(BaseCommand):
    help = "Train the guard: sft, grpo or dpo on JSONL files and/or reviewed items (LoRA by default)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--recipe", required=True, choices=["sft", "grpo", "dpo"])
        parser.add_argument("--data", required=True, nargs="+", metavar="PATH",
                            help="JSONL files or directories in the shared schema, or reviewed:<policy-slug>")
        parser.add_argument("--base", default="embedded", help="embedded (default) or a local model directory")
        parser.add_argument("--init", default="", metavar="ADAPTER_DIR", help="continue training this LoRA adapter")
        parser.add_argument("--out", required=True, metavar="DIR")
        parser.add_argument("--max-steps", type=int, default=100)
        parser.add_argument("--max-minutes", type=float, default=0.0,
                            help="stop the training loop after this many minutes and save the adapter (0: no limit)")
        parser.add_argument("--lora-rank", type=int, default=8)
        parser.add_argument("--lora-layers", type=int, default=0, metavar="N",
                            help="adapt only the top N decoder layers (0 = all; fewer is much faster on a CPU)")
        parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
        parser.add_argument("--policy", default="auto", help="auto (each record under its own taxonomy) or a policy slug")
        parser.add_argument("--max-examples", type=int, default=2000)
        parser.add_argument("--learning-rate", type=float, default=None)
        parser.add_argument("--batch-size", type=int, default=4)
        parser.add_argument("--grad-accum", type=int, default=1)
        parser.add_argument("--max-length", type=int, default=1024)
        parser.add_argument("--max-text-tokens", type=int, default=384)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--save-steps", type=int, default=50)
        parser.add_argument("--holdout-percent", type=int, default=10)
        parser.add_argument("--max-categories", type=int, default=16,
                            help="longer policies are shown as a subset that keeps the gold categories")
        parser.add_argument("--no-augment", action="store_true")
        parser.add_argument("--gradient-checkpointing", action="store_true")
        parser.add_argument("--num-generations", type=int, default=4, help="grpo: answers sampled per prompt")
        parser.add_argument("--max-completion-length", type=int, default=96)
        parser.add_argument("--dpo-samples", type=int, default=4, help="dpo: answers sampled per prompt (k)")
        parser.add_argument("--dpo-prompts", type=int, default=64, help="dpo: prompts to sample")
        parser.add_argument("--dpo-gold-fallback", action="store_true",
                            help="dpo: when every sample is wrong, use the gold answer as chosen")
        parser.add_argument("--mix", default="", metavar="SPEC",
                            help="mixture weights, e.g. task.prompt=0.5,task.response=0.25,task.refusal=0.25,"
                                 "positive.prompt=0.5,source.davidson_hate_offensive=0.5,cap=0.25 (trainer/mix.py)")
        parser.add_argument("--licences", default="all", metavar="LIST",
                            help="data licence allowlist: all (default), permissive (MIT, Apache-2.0, CC-BY-*, "
                                 "CDLA-Permissive-*) or comma-separated ids, e.g. permissive,unknown")
        parser.add_argument("--logging-steps", type=int, default=0,
                            help="log the loss every N steps (0: every step on a CPU, every 10th on a GPU)")
        parser.add_argument("--resume", default=None, metavar="CHECKPOINT", help="resume from a checkpoint directory")

    def handle(self, *args: Any, **options: Any) -> None:
        from trainer.recipes import run
        from trainer.settings import TrainingError, TrainSettings
        from trainer.teacher import configured_teacher

        try:
            settings = TrainSettings(
                recipe=options["recipe"], data=options["data"], out_dir=options["out"], base=options["base"],
                init_adapter=options["init"], max_steps=options["max_steps"], max_minutes=options["max_minutes"], lora_rank=options["lora_rank"],
                lora_layers=options["lora_layers"],
                full=options["full"], learning_rate=options["learning_rate"], batch_size=options["batch_size"],
                grad_accum=options["grad_accum"], policy=options["policy"], max_examples=options["max_examples"],
                max_length=options["max_length"], max_text_tokens=options["max_text_tokens"], seed=options["seed"],
                save_steps=options["save_steps"], holdout_percent=options["holdout_percent"],
                max_categories=options["max_categories"],
                augment=not options["no_augment"], gradient_checkpointing=options["gradient_checkpointing"],
                num_generations=options["num_generations"], max_completion_length=options["max_completion_length"],
                dpo_samples=options["dpo_samples"], dpo_prompts=options["dpo_prompts"],
                dpo_gold_fallback=options["dpo_gold_fallback"], mix=options["mix"], licences=options["licences"],
                logging_steps=options["logging_steps"],
            )
            outcome = run(settings, resume_from_checkpoint=options["resume"], teacher=configured_teacher(),
                          log=lambda message: self.stderr.write(str(message)))
        except (TrainingError, FileNotFoundError, ValueError) as error:
            raise CommandError(str(error)) from error
        summary = outcome.summary
        self.stdout.write(
            f"{settings.recipe}: {outcome.steps} steps, {summary['steps_per_second']} steps/s, "
            f"model {outcome.model_dir} ({summary['model_bytes'] / 1e6:.1f} MB)"
        )
