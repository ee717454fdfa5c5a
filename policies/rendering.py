"""What the model sees: a version rendered by the guard contract, with its token count.

Tokens are counted with the embedded model's tokenizer (loaded once per
process). When the embedded model is not prepared the text is still shown and
the count is reported as unavailable.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from guard.contract import Mode, PolicySpec, render, render_policy

log = logging.getLogger(__name__)

PLACEHOLDER_PROMPT = "<the user's prompt goes here>"


@dataclass(frozen=True)
class ModelInput:
    text: str
    token_count: int | None
    policy_token_count: int | None
    unavailable_reason: str = ""


_load_lock = threading.Lock()


@lru_cache(maxsize=2)
def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _tokenizer_at(path: str) -> Any:
    # Loading takes seconds (262k-token vocabulary): concurrent first requests wait for one load.
    with _load_lock:
        return _load_tokenizer(path)


def embedded_tokenizer() -> tuple[Any | None, str]:
    """(tokenizer, "") or (None, why it is unavailable)."""
    from guard.embedded import resolve_model_path

    try:
        path = resolve_model_path("embedded")
    except FileNotFoundError as exc:
        return None, str(exc)
    try:
        return _tokenizer_at(str(path)), ""
    except (OSError, ValueError) as exc:
        log.warning("cannot load the embedded tokenizer from %s: %s", path, exc)
        return None, f"the embedded tokenizer could not be loaded ({exc})"


def model_input(spec: PolicySpec, prompt: str = "", response: str = "", mode: Mode = "fast") -> ModelInput:
    """The full input for one request (a placeholder prompt when none is given)."""
    tokenizer, reason = embedded_tokenizer()
    rendered = render(spec, prompt.strip() or PLACEHOLDER_PROMPT, response or None, mode)
    text = rendered.to_text(tokenizer)
    if tokenizer is None:
        return ModelInput(text=text, token_count=None, policy_token_count=None, unavailable_reason=reason)
    # add_special_tokens: the beginning-of-sequence token is part of what the model reads.
    total = len(tokenizer.encode(text, add_special_tokens=True))
    policy_only = len(tokenizer.encode(render_policy(spec), add_special_tokens=False))
    return ModelInput(text=text, token_count=total, policy_token_count=policy_only)
