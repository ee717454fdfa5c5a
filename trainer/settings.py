"""What a training run is asked to do (``TrainSettings``) and what it did (``TrainOutcome``).

Shared by the recipes, the model loading and the callers (``manage.py train`` and the
Celery task); nothing here imports torch or TRL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RECIPES = ("sft", "grpo", "dpo")
DEFAULT_LEARNING_RATES = {("sft", False): 2e-4, ("grpo", False): 2e-5, ("dpo", False): 2e-5,
                          ("sft", True): 2e-5, ("grpo", True): 1e-6, ("dpo", True): 1e-6}

Log = Callable[[str], None]


class TrainingError(Exception):
    """A training run that cannot start or go on; the message says why."""


@dataclass
class TrainSettings:
    recipe: str
    data: list[str]
    out_dir: str
    base: str = "embedded"
    init_adapter: str = ""
    max_steps: int = 100
    # Stop the training loop after this many minutes (0: no limit); the adapter is saved as after max_steps.
    # A device session has a fixed budget: a run that stops on time beats one killed mid-step.
    max_minutes: float = 0.0
    lora_rank: int = 8
    # LoRA on the top N decoder layers only (0 = all). Autograd then stops at
    # the lowest adapted layer, which is what makes CPU training affordable.
    lora_layers: int = 0
    full: bool = False
    learning_rate: float | None = None
    batch_size: int = 4
    grad_accum: int = 1
    policy: str = "auto"
    max_examples: int | None = 2000
    max_length: int = 1024
    max_text_tokens: int = 384
    max_categories: int = 16
    holdout_percent: int = 10
    augment: bool = True
    seed: int = 0
    save_steps: int = 50
    gradient_checkpointing: bool = False
    # The training mix (``trainer.mix.MixSpec`` text form; "" = the default mix) and the data licence
    # allowlist (``trainer.licences``: "all", "permissive" or ids).
    mix: str = ""
    licences: str = "all"
    # Log (and so sync the device for the loss) every N steps; 0 = every step on a CPU, every 10th on a GPU.
    logging_steps: int = 0
    # grpo
    num_generations: int = 4
    max_completion_length: int = 96
    temperature: float = 1.0
    # dpo
    dpo_samples: int = 4
    dpo_prompts: int = 64
    dpo_beta: float = 0.1
    # When every sample of a prompt is wrong, use the gold answer as "chosen" (off: strictly hard samples).
    dpo_gold_fallback: bool = False

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise TrainingError(f"unknown recipe {self.recipe!r}; expected one of {', '.join(RECIPES)}")
        if self.max_steps < 1:
            raise TrainingError("max_steps must be at least 1")
        if self.max_minutes < 0:
            raise TrainingError("max_minutes must be 0 (no limit) or a positive number of minutes")
        if not self.full and self.lora_rank < 1:
            raise TrainingError("lora_rank must be at least 1 (or use full fine-tuning)")
        if self.lora_layers < 0:
            raise TrainingError("lora_layers must be 0 (all layers) or a positive number of top layers")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise TrainingError("batch_size and grad_accum must be at least 1")
        if self.recipe == "grpo" and self.num_generations < 2:
            raise TrainingError("grpo needs num_generations >= 2 (rewards are normalised within a group)")
        if self.recipe == "dpo" and self.dpo_samples < 2:
            raise TrainingError("dpo needs dpo_samples >= 2 to find right and wrong answers for a prompt")
        if self.logging_steps < 0:
            raise TrainingError("logging_steps must be 0 (automatic) or positive")
        from trainer.licences import parse_allowlist
        from trainer.mix import MixSpec

        try:
            MixSpec.parse(self.mix)
            parse_allowlist(self.licences)
        except ValueError as error:
            raise TrainingError(str(error)) from error

    @property
    def lr(self) -> float:
        return self.learning_rate or DEFAULT_LEARNING_RATES[(self.recipe, self.full)]

    def hyperparameters(self) -> dict[str, Any]:
        values = asdict(self)
        for key in ("recipe", "data", "out_dir", "base", "init_adapter", "policy"):
            values.pop(key)
        values["learning_rate"] = self.lr
        return values


@dataclass
class TrainOutcome:
    out_dir: Path
    model_dir: Path  # the adapter directory (LoRA) or the full model directory
    steps: int
    cancelled: bool
    checkpoint: str | None
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    provenance: dict[str, Any]
    held_out_files: list[str] = field(default_factory=list)
