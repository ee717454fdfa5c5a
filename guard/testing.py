"""A tiny, randomly initialised model of the embedded guard's architecture.

Tests that only need shapes and plumbing (training loops, batching, adapters,
dispatch) use it instead of the 270M model: same architecture (Gemma 3), same
tokenizer, a few MB of weights, milliseconds per step on a CPU.
"""

from __future__ import annotations

import shutil
from pathlib import Path

TINY_NAME = "tiny-gemma3-random"


def tiny_model_dir(root: Path | None = None, seed: int = 0, layers: int = 2) -> Path:
    """Create (once) and return a directory holding a tiny random Gemma 3 + the real tokenizer.

    ``layers=18`` gives the real architecture's depth (5 sliding-window layers to
    one global, as in Gemma 3 270M): the overhead proxy of bench/guard_throughput.py."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from guard import embedded

    base = root or embedded.cache_root()
    depth = "" if layers == 2 else f"-l{layers}"
    target = base / f"{TINY_NAME}-s{seed}{depth}-c{embedded.CONVERSION_VERSION}"
    if (target / "config.json").exists():
        return target
    source = embedded.prepare()
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=4096,
        sliding_window=512,
        layer_types=["sliding_attention", "full_attention"] if layers == 2 else [
            "full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)
        ],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    config.architectures = ["Gemma3ForCausalLM"]
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config)
    staging = base / f".staging-{TINY_NAME}-{seed}{depth}"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).exists():
            shutil.copy(source / name, staging / name)
    staging.replace(target)
    return target
