"""The model a recipe trains: the base (embedded or a local directory), its tokenizer, and the
LoRA (or full) wrapping, on whatever device is there."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from trainer.settings import Log, TrainingError, TrainSettings

# Gemma: <eos> and <end_of_turn> both end an answer.
END_TOKENS = ("<eos>", "<end_of_turn>")
# The decoder's linear layers (Gemma/Llama naming), what "all-linear" picks there.
LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

def device_info() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cuda": cuda,
        "bf16": bool(cuda and torch.cuda.is_bf16_supported()),
        "threads": torch.get_num_threads(),
    }


def resolve_base(base: str) -> Path:
    """``embedded`` or a local model directory (never a hub name)."""
    from guard.embedded import resolve_model_path

    try:
        path = resolve_model_path(base or "embedded")
    except FileNotFoundError as error:
        raise TrainingError(str(error)) from error
    if not (path / "config.json").is_file():
        raise TrainingError(f"base model {base!r}: {path} has no config.json")
    return path


def load_tokenizer(base_path: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def end_token_ids(tokenizer: Any) -> list[int]:
    ids = []
    vocab = tokenizer.get_vocab()
    for token in END_TOKENS:
        if token in vocab:
            ids.append(vocab[token])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def load_model(settings: TrainSettings, base_path: Path, tokenizer: Any, log: Log) -> Any:
    """The model to train: base (+ the init adapter) wrapped in a fresh or continued LoRA adapter."""
    import torch
    from transformers import AutoModelForCausalLM

    info = device_info()
    dtype = torch.bfloat16 if info["bf16"] else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=dtype)
    model.generation_config.eos_token_id = end_token_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    init = settings.init_adapter.strip()
    if init and not (Path(init) / "adapter_config.json").is_file():
        raise TrainingError(f"init adapter {init!r} is not a PEFT adapter directory (no adapter_config.json)")
    if settings.full:
        if init:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, init).merge_and_unload()
            log(f"merged init adapter {init} into the base for full fine-tuning")
        return model
    from peft import LoraConfig, PeftModel, get_peft_model

    if init:
        log(f"continuing LoRA adapter {init}")
        return PeftModel.from_pretrained(model, init, is_trainable=True)
    layers = top_layers(model, settings.lora_layers)
    config = LoraConfig(
        r=settings.lora_rank,
        lora_alpha=2 * settings.lora_rank,
        lora_dropout=0.05,
        # peft accepts layers_to_transform only with named modules (not "all-linear").
        target_modules=LINEAR_MODULES if layers else "all-linear",
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def adopt_init_adapter_shape(settings: TrainSettings) -> TrainSettings:
    """A continued LoRA keeps the init adapter's rank and layers, whatever the options said:
    record those, so the run's provenance describes the adapter it saves."""
    config = json.loads((Path(settings.init_adapter.strip()) / "adapter_config.json").read_text(encoding="utf-8"))
    layers = config.get("layers_to_transform")
    return replace(settings, lora_rank=int(config.get("r") or settings.lora_rank),
                   lora_layers=len(layers) if isinstance(layers, list) else 0)


def top_layers(model: Any, count: int) -> list[int] | None:
    """Indices of the top ``count`` decoder layers (None = every layer)."""
    total = int(getattr(model.config.get_text_config(), "num_hidden_layers", 0) or 0)
    if count <= 0 or total == 0 or count >= total:
        return None
    return list(range(total - count, total))


def score_only_label_positions() -> None:
    """Make TRL's fused LM head project only the positions that carry a label, on every device.

    TRL 1.16 compacts to the labelled positions only on Triton devices and
    scores *every* position elsewhere (to keep tile shapes fixed on Neuron).
    On a CPU that multiplies the 262k-vocabulary projection by the prompt
    length (~6x slower per step for a 400-token prompt and a 40-token answer).
    The compact path is plain PyTorch and correct on any device.
    """
    import trl.trainer.utils as trl_utils

    original = trl_utils._use_triton
    if getattr(original, "guardsite_patched", False):
        return

    def use_compact(device: Any) -> bool:
        return bool(original(device)) or getattr(device, "type", "") == "cpu"

    use_compact.guardsite_patched = True  # type: ignore[attr-defined]
    trl_utils._use_triton = use_compact
