"""The three training recipes, on TRL 1.16.

``sft``   reasoning SFT cold start: completion-only loss on the contract answer
          (GuardReasoner R-SFT / GSPR cold start).
``grpo``  GRPOTrainer with the rule-based rewards of ``trainer.rewards`` (RSafe, GSPR).
``dpo``   hard-sample DPO (GuardReasoner HS-DPO): sample k answers per prompt from
          the current model, keep prompts where some are right and some wrong,
          chosen = a right one, rejected = a wrong one.

LoRA (peft, all linear layers) by default; ``full=True`` fine-tunes every
weight. Memory: TRL 1.16 computes token log-probabilities with a fused LM head
(the 262k-wide logits are never materialised for the whole sequence), batches
are small, and gradient checkpointing is available.

``run(settings)`` is used by ``manage.py train`` and by the Celery task; the
callers pass TrainerCallbacks for progress, cancellation and checkpoints.
Around it: ``trainer.settings`` (what a run is asked to do), ``trainer.model_loading``
(base, tokenizer, LoRA), ``trainer.callbacks`` (curve, progress, time budget) and
``trainer.hard_samples`` (DPO's sampled pairs).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from trainer import rewards
from trainer.callbacks import (
    format_entry,
    make_progress_callback,
    make_time_budget_callback,
    metrics_entry,
)
from trainer.data import (
    TRAINING_IDS_FILE,
    BuiltData,
    Teacher,
    TrainingExample,
    build_dataset,
    completion_mask_spans,
)
from trainer.hard_samples import build_hard_pairs, sample_answers
from trainer.model_loading import (
    adopt_init_adapter_shape,
    device_info,
    load_model,
    load_tokenizer,
    resolve_base,
    score_only_label_positions,
)
from trainer.settings import RECIPES, Log, TrainingError, TrainOutcome, TrainSettings

ADAPTER_DIR = "adapter"
FULL_MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
HELD_OUT_DIR = "heldout"
DPO_PAIRS_FILE = "dpo_pairs.jsonl"
METRICS_FILE = "train_metrics.json"


def _quiet_libraries() -> None:
    """No progress bars from transformers/datasets: steps are logged through ``log``."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def _quiet(trainer: Any) -> Any:
    """Drop the Trainer's stdout printer (``disable_tqdm`` installs it); the progress callback logs instead."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def _common_args(settings: TrainSettings, out: Path) -> dict[str, Any]:
    info = device_info()
    return {
        "output_dir": str(out / CHECKPOINTS_DIR),
        "max_steps": settings.max_steps,
        "per_device_train_batch_size": settings.batch_size,
        "gradient_accumulation_steps": settings.grad_accum,
        "learning_rate": settings.lr,
        "lr_scheduler_type": "constant_with_warmup",
        "warmup_steps": min(10, settings.max_steps // 10),
        "logging_steps": settings.logging_steps or (10 if info["cuda"] else 1),
        "save_strategy": "steps",
        "save_steps": max(1, settings.save_steps),
        "save_total_limit": 2,
        "report_to": [],
        "seed": settings.seed,
        "bf16": info["bf16"],
        "fp16": False,
        "use_cpu": not info["cuda"],
        "gradient_checkpointing": settings.gradient_checkpointing,
        "dataloader_pin_memory": info["cuda"],
        "disable_tqdm": True,
        "save_only_model": False,
        # The Trainer's NaN/Inf filter reads every step's loss back to the host (two syncs per step, measured by
        # bench/train_speed.py), which stops the host queueing the next step's kernels on a GPU. A NaN loss now
        # shows in the logged loss instead of being papered over with the running mean.
        "logging_nan_inf_filter": False,
    }


# --------------------------------------------------------------------------- datasets


def build_rows(examples: Sequence[TrainingExample], tokenizer: Any, settings: TrainSettings) -> list[dict[str, Any]]:
    return [example.columns(tokenizer, settings.max_text_tokens) for example in examples]


def tokenize_sft(rows: Sequence[dict[str, Any]], tokenizer: Any, max_length: int) -> tuple[list[dict[str, Any]], int]:
    """Prompt and answer tokenised separately, exactly as at inference (prompt with BOS, then the answer).

    Rows longer than ``max_length`` are dropped, never truncated: a cut answer
    would teach the model to stop mid-answer. The tokens of answer fields without
    gold (``masked_fields``: a placeholder value) get no loss.
    """
    out, dropped = [], 0
    for row in rows:
        prompt_ids = tokenizer(row["prompt"])["input_ids"]
        spans = completion_mask_spans(row["completion"], json.loads(row.get("masked_fields") or "[]"))
        if spans:
            encoded = tokenizer(row["completion"], add_special_tokens=False, return_offsets_mapping=True)
            answer_ids = encoded["input_ids"]
            # A token overlapping a masked value's span gets no loss.
            answer_mask = [0 if any(start < stop and begin < end for begin, stop in spans) else 1
                           for start, end in encoded["offset_mapping"]]
        else:
            answer_ids = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
            answer_mask = [1] * len(answer_ids)
        if len(prompt_ids) + len(answer_ids) > max_length:
            dropped += 1
            continue
        out.append({"input_ids": prompt_ids + answer_ids, "completion_mask": [0] * len(prompt_ids) + answer_mask})
    return out, dropped


def real_token_share(lengths: Sequence[int], batch_size: int, seed: int = 0) -> float:
    """The share of a random batch's tokens that are not padding (batches padded to their longest row).

    What random batching costs: the rest of every step's compute is spent on pads.
    """
    if not lengths:
        return 1.0
    order = list(lengths)
    random.Random(seed).shuffle(order)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return round(sum(map(sum, batches)) / sum(max(b) * len(b) for b in batches), 4)


def _fits(rows: Sequence[dict[str, Any]], tokenizer: Any, limit: int) -> tuple[list[dict[str, Any]], int]:
    kept = [row for row in rows if len(tokenizer(row["prompt"])["input_ids"]) <= limit]
    return kept, len(rows) - len(kept)


# --------------------------------------------------------------------------- the recipes


def right_padded_attention_masks(inputs: dict[str, Any], config: Any) -> dict[str, Any]:
    """Give a right-padded training batch the per-layer-type causal masks directly, instead of its padding mask.

    TRL's collator pads on the right (always, for non-packed batches), so under a causal mask a real
    token only ever attends to tokens before it, all real; pads get no loss. The padding mask then
    changes nothing the loss reads, and building masks from it costs transformers 3.5 host syncs per
    step (checks of the mask's values; 2 from its packed-sequence check without one), measured by
    bench/train_speed.py: each one stops the host from queueing the next kernels on a GPU. A mapping
    of layer type -> mask is taken as is by transformers' decoders: ``None`` for full attention (SDPA's
    causal path), a boolean sliding-window causal mask built on the device for sliding layers. A model
    with other layer types keeps its padding mask.
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layer_types = set(getattr(text, "layer_types", None) or ["full_attention"])
    if not layer_types <= {"full_attention", "sliding_attention"} or "input_ids" not in inputs:
        return inputs
    import torch

    length = inputs["input_ids"].shape[-1]
    masks: dict[str, Any] = {"full_attention": None}
    if "sliding_attention" in layer_types:
        window = int(text.sliding_window)
        if length <= window:
            masks["sliding_attention"] = None  # the window covers the whole sequence: plain causal
        else:
            position = torch.arange(length, device=inputs["input_ids"].device)
            distance = position[:, None] - position[None, :]
            masks["sliding_attention"] = ((distance >= 0) & (distance < window))[None, None]
    inputs["attention_mask"] = masks
    return inputs


def lean_sft_trainer_class(base: type) -> type:
    """SFTTrainer with the answer-token loss only: no per-step entropy / token-accuracy metrics.

    TRL 1.16's SFT loss already projects only the labelled (answer) positions through the
    262k-vocabulary LM head, but it also computes the entropy over the whole vocabulary and
    top-1 accuracy at those positions and reads three of them back (``.item()``) on every step:
    a device sync per step that stops the host from queueing the next step's kernels. Here the
    fused head computes log-probabilities only and nothing is read back; the loss is logged
    every ``logging_steps``.
    """
    import torch
    from trl.trainer.utils import add_fused_lm_head

    class LeanSFTTrainer(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            target = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            add_fused_lm_head(target, outputs=("log_probs",))

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            inputs["use_cache"] = False
            right_padded_attention_masks(inputs, model.config)
            outputs = model(**inputs, fused_lm_head=True)
            tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -outputs.log_probs.sum() / torch.as_tensor(tokens, device=outputs.log_probs.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

    return LeanSFTTrainer


def _train_sft(settings: TrainSettings, model: Any, tokenizer: Any, rows: list[dict[str, Any]], out: Path,
               callbacks: list[Any], resume: str | None, log: Log) -> tuple[Any, dict[str, Any]]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tokenized, dropped = tokenize_sft(rows, tokenizer, settings.max_length)
    if not tokenized:
        raise TrainingError(f"every example is longer than max_length={settings.max_length} tokens")
    share = real_token_share([len(row["input_ids"]) for row in tokenized], settings.batch_size, settings.seed)
    log(f"sft: {len(tokenized)} sequences ({dropped} longer than {settings.max_length} tokens dropped); "
        f"random batches of {settings.batch_size} are {100 * share:.0f}% real tokens, the rest padding")
    # Random batches, not grouped by length: in this data length predicts the label
    # (short AdvBench-style requests are unsafe, long chat logs mostly safe), so
    # length-grouped batches are nearly single-label and the model learned the last
    # batches' label prior instead of the content (measured: every held-out prompt "safe").
    # Batches are padded to their longest sequence (TRL's collator), to a multiple of 8 on a GPU (tensor cores).
    config = SFTConfig(**_common_args(settings, out), max_length=settings.max_length, completion_only_loss=True,
                       packing=False, dataset_num_proc=None, pad_to_multiple_of=8 if device_info()["cuda"] else None)
    trainer = lean_sft_trainer_class(SFTTrainer)(model=model, args=config, train_dataset=Dataset.from_list(tokenized),
                                                 processing_class=tokenizer, callbacks=callbacks)
    _quiet(trainer).train(resume_from_checkpoint=resume)
    return trainer, {"sequences": len(tokenized), "dropped_too_long": dropped, "real_token_share": share}


def _train_grpo(settings: TrainSettings, model: Any, tokenizer: Any, rows: list[dict[str, Any]], out: Path,
                callbacks: list[Any], resume: str | None, log: Log) -> tuple[Any, dict[str, Any]]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    prompt_rows, dropped = _fits(rows, tokenizer, settings.max_length - settings.max_completion_length)
    if not prompt_rows:
        raise TrainingError("every prompt is too long for max_length - max_completion_length")
    for row in prompt_rows:
        row.pop("completion", None)
    generations = settings.num_generations
    # Completions per device step; GRPO needs whole groups of `num_generations`.
    batch = max(settings.batch_size, generations)
    batch -= batch % generations
    log(f"grpo: {len(prompt_rows)} prompts, {generations} generations each, {batch // generations} prompt(s) per step")
    config = GRPOConfig(
        **{**_common_args(settings, out), "per_device_train_batch_size": batch},
        num_generations=generations,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        beta=0.0,
        remove_unused_columns=False,
        log_completions=False,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=list(rewards.REWARD_FUNCTIONS), args=config,
                          train_dataset=Dataset.from_list(prompt_rows), processing_class=tokenizer, callbacks=callbacks)
    _quiet(trainer).train(resume_from_checkpoint=resume)
    return trainer, {"prompts": len(prompt_rows), "dropped_too_long": dropped, "reward_functions": [f.__name__ for f in rewards.REWARD_FUNCTIONS]}


def _train_dpo(settings: TrainSettings, model: Any, tokenizer: Any, rows: list[dict[str, Any]], out: Path,
               callbacks: list[Any], resume: str | None, log: Log) -> tuple[Any, dict[str, Any]]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    pairs_file = out / DPO_PAIRS_FILE
    if resume and pairs_file.exists():
        # A resumed run trains on exactly the pairs of the first attempt.
        saved = json.loads(pairs_file.read_text(encoding="utf-8"))
        pairs, stats = saved["pairs"], saved["stats"]
        log(f"dpo: reusing {len(pairs)} pairs from {pairs_file}")
    else:
        prompt_rows, _ = _fits(rows, tokenizer, settings.max_length - settings.max_completion_length)
        prompt_rows = prompt_rows[: settings.dpo_prompts]
        started = time.monotonic()
        samples = sample_answers(model, tokenizer, [r["prompt"] for r in prompt_rows], settings.dpo_samples,
                                 settings.max_completion_length, settings.temperature, settings.seed)
        pairs, stats = build_hard_pairs(prompt_rows, samples, settings.dpo_gold_fallback)
        stats["sampling_seconds"] = round(time.monotonic() - started, 1)
        pairs_file.write_text(json.dumps({"pairs": pairs, "stats": stats}, ensure_ascii=False), encoding="utf-8")
        log(f"dpo: sampled {settings.dpo_samples} answers for {len(prompt_rows)} prompts in {stats['sampling_seconds']}s; {stats}")
    if not pairs:
        raise TrainingError(
            f"dpo found no hard samples: of {stats['prompts']} prompts {stats['all_right']} had only right and "
            f"{stats['all_wrong']} only wrong answers; sample more prompts (dpo_prompts), train the init model "
            "further, or allow the gold answer as chosen (dpo_gold_fallback)"
        )
    model.train()
    config = DPOConfig(**_common_args(settings, out), max_length=settings.max_length, beta=settings.dpo_beta)
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer,
                         callbacks=callbacks)
    _quiet(trainer).train(resume_from_checkpoint=resume)
    return trainer, {"pairs": len(pairs), "hard_samples": stats}


RECIPE_FUNCTIONS = {"sft": _train_sft, "grpo": _train_grpo, "dpo": _train_dpo}


# --------------------------------------------------------------------------- run


def latest_checkpoint(out_dir: str | Path) -> str | None:
    root = Path(out_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return None
    found = [p for p in root.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    if not found:
        return None
    return str(max(found, key=lambda p: int(p.name.split("-")[-1])))


def checkpoint_history(checkpoint: str | Path | None) -> list[dict[str, Any]]:
    """The logged steps saved with a checkpoint, so a resumed run keeps its whole curve."""
    if not checkpoint:
        return []
    state_file = Path(checkpoint) / "trainer_state.json"
    try:
        logs = json.loads(state_file.read_text(encoding="utf-8")).get("log_history") or []
    except (OSError, ValueError):
        return []
    entries = (metrics_entry(int(log.get("step", 0)), log) for log in logs if isinstance(log, dict))
    return [entry for entry in entries if entry is not None]


def _name_embedded_base(adapter_dir: Path) -> None:
    """Record the base as "embedded" (the runtime resolves it), not this machine's cache path,
    so the adapter works wherever it is copied."""
    config_file = adapter_dir / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = "embedded"
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__, "peft": peft.__version__}


def run(
    settings: TrainSettings,
    *,
    callbacks: Sequence[Any] = (),
    resume_from_checkpoint: str | None = None,
    teacher: Teacher | None = None,
    log: Log = print,
    on_data: Callable[[BuiltData], None] | None = None,
) -> TrainOutcome:
    """Build the data, train, save the adapter (or full model) and the metrics; return what happened."""
    import torch

    out = Path(settings.out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    score_only_label_positions()
    _quiet_libraries()
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    base_path = resolve_base(settings.base)
    info = device_info()
    init = settings.init_adapter.strip()
    continued = bool(init) and not settings.full and (Path(init) / "adapter_config.json").is_file()
    if continued:
        # Decided before anything is logged or recorded: the log, the provenance and the saved adapter agree.
        settings = adopt_init_adapter_shape(settings)
    method = "full fine-tuning" if settings.full else f"LoRA r={settings.lora_rank}"
    if not settings.full and settings.lora_layers:
        method += f" on the top {settings.lora_layers} layers"
    elif not settings.full:
        method += " on every layer"
    if continued:
        method += f", continuing {init} (a continued adapter keeps its rank and layers)"
    log(f"{settings.recipe}: base {settings.base} ({base_path}), device {info['device']}, {method}")

    built = build_dataset(settings.data, policy=settings.policy, max_examples=settings.max_examples, seed=settings.seed,
                          holdout_percent=settings.holdout_percent, augment=settings.augment,
                          max_categories=settings.max_categories, teacher=teacher, log=log, mix=settings.mix,
                          licences=settings.licences)
    if not built.examples:
        raise TrainingError("the data gave no training examples after balancing (a source of one label only, or every "
                            "record held out): add data with both labels, e.g. review flagged and safe items alike")
    held_out = [str(p) for p in built.write_held_out(out / HELD_OUT_DIR)]
    (out / TRAINING_IDS_FILE).write_text("".join(f"{example.id}\n" for example in built.examples), encoding="utf-8")
    if on_data is not None:
        on_data(built)

    tokenizer = load_tokenizer(base_path)
    model = load_model(settings, base_path, tokenizer, log)
    rows = build_rows(built.examples, tokenizer, settings)

    history: list[dict[str, Any]] = checkpoint_history(resume_from_checkpoint)
    seeded = len(history)  # entries from before a resume: not timed by this process

    def collect(entry: dict[str, Any]) -> None:
        history.append(entry)
        log(format_entry(entry))

    collector = make_progress_callback(collect)
    budget = make_time_budget_callback(settings.max_minutes) if settings.max_minutes else None
    all_callbacks = [collector, *([budget] if budget is not None else []), *callbacks]
    started = time.monotonic()
    trainer, recipe_summary = RECIPE_FUNCTIONS[settings.recipe](
        settings, model, tokenizer, rows, out, all_callbacks, resume_from_checkpoint, log
    )
    seconds = time.monotonic() - started
    train_seconds = collector.train_seconds or seconds
    state = trainer.state
    steps = int(state.global_step)
    cancelled = steps < settings.max_steps
    checkpoint = latest_checkpoint(out)

    model_dir = out / (FULL_MODEL_DIR if settings.full else ADAPTER_DIR)
    trained = trainer.model
    if settings.full:
        trained.save_pretrained(str(model_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(model_dir))
    else:
        # Only the trained adapter (DPO adds a frozen "ref" copy next to it).
        trained.save_pretrained(str(model_dir), selected_adapters=["default"], safe_serialization=True)
        if (settings.base or "embedded").strip() == "embedded":
            _name_embedded_base(model_dir)
    size = directory_size(model_dir)
    first_steps = [e["step"] for e in history[seeded:] if "step" in e]
    if first_steps:
        trained_steps = steps - (min(first_steps) - 1)
    else:
        trained_steps = 0 if seeded else steps
    summary = {
        "steps": steps,
        "seconds": round(seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "steps_per_second": round(trained_steps / train_seconds, 4) if train_seconds > 0 and trained_steps else None,
        "model_bytes": size,
        "device": info,
        "recipe": recipe_summary,
        "stopped_at_time_budget": bool(budget is not None and budget.reached),
    }
    if info["cuda"]:
        summary["max_gpu_memory_bytes"] = int(torch.cuda.max_memory_allocated())
    provenance = {
        "recipe": settings.recipe,
        "base_model": settings.base or "embedded",
        "base_model_path": str(base_path),
        "init_adapter": settings.init_adapter or None,
        "policy": settings.policy,
        "hyperparameters": settings.hyperparameters(),
        "data": built.provenance(),
        "held_out": held_out,
        "versions": _versions(),
        "teacher": getattr(teacher, "name", None),
    }
    (out / METRICS_FILE).write_text(json.dumps({"summary": summary, "history": history, "provenance": provenance},
                                               indent=1, default=str), encoding="utf-8")
    log(f"{settings.recipe}: {steps} steps in {seconds:.1f}s ({summary['steps_per_second']} steps/s); "
        f"saved {model_dir} ({size / 1e6:.1f} MB)"
        f"{' - stopped at the time budget' if summary['stopped_at_time_budget'] else ' - stopped early' if cancelled else ''}")
    return TrainOutcome(out_dir=out, model_dir=model_dir, steps=steps, cancelled=cancelled, checkpoint=checkpoint,
                        history=history, summary=summary, provenance=provenance, held_out_files=held_out)


__all__ = [
    "RECIPES",
    "TrainOutcome",
    "TrainSettings",
    "TrainingError",
    "latest_checkpoint",
    "run",
]
