"""A teacher model writes SFT rationales (GuardReasoner / GSPR: a strong model,
given the gold labels, explains them).

The teacher is any OpenAI-compatible chat server, reached through the guard's
``OpenAIBackend`` (its HTTP client: timeouts, bounded retries, API key). It sees
the contract's rendered request plus the gold labels and writes the five-line
answer; ``trainer.data.accept_teacher_answer`` keeps it only when the parsed
labels match gold and the explanation is within the word budget.

Configured by ``TRAINER_TEACHER_BASE_URL`` (settings or environment) and
optionally ``TRAINER_TEACHER_MODEL`` (default: the server's first model) and
``TRAINER_TEACHER_API_KEY``. Not configured -> no teacher: explanations are
composed from the policy text.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from guard.contract import EXPLANATION_WORD_BUDGET, format_answer, render
from trainer.data import TrainingExample

logger = logging.getLogger(__name__)

# After this many failed requests in a row the teacher is skipped for the rest of the run.
MAX_CONSECUTIVE_FAILURES = 3
TEACHER_MAX_TEXT_TOKENS = 1024


def _setting(name: str) -> str:
    from django.conf import settings

    return str(getattr(settings, name, "") or os.environ.get(name, "") or "").strip()


def gold_hint(example: TrainingExample) -> str:
    labels = format_answer(example.gold.verdict(""), example.has_response).rsplit("\n", 1)[0]
    return (
        "The correct labels for this conversation are:\n"
        f"{labels}\n"
        "Write the five-line answer with exactly these labels. In the explanation (at most "
        f"{EXPLANATION_WORD_BUDGET} words) name the violated category code and the rule it breaks, "
        "or say briefly why no category applies."
    )


class OpenAITeacher:
    def __init__(self, base_url: str, model: str = "", api_key: str = "", concurrency: int = 4) -> None:
        from guard.backends.openai_backend import OpenAIBackend

        self.backend = OpenAIBackend(base_url, model or None, api_key=api_key or None, retries=1, timeout=60.0)
        self.model = model
        self.concurrency = max(1, concurrency)
        self.failures = 0
        self.asked = 0
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"{self.model or 'default'} at {self.backend.base_url}"

    def answer(self, example: TrainingExample) -> str | None:
        if self.failures >= MAX_CONSECUTIVE_FAILURES:
            return None
        rendered = render(example.policy, example.prompt, example.response, "reason", max_text_tokens=TEACHER_MAX_TEXT_TOKENS)
        messages = rendered.messages
        messages[-1] = {"role": "user", "content": messages[-1]["content"] + "\n\n" + gold_hint(example)}
        try:
            model = self.model or self.backend._model_name()
            response = self.backend._send("POST", "/chat/completions", {
                "model": model, "messages": messages, "temperature": 0, "max_tokens": 160,
            })
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
            text = response.json()["choices"][0]["message"]["content"] or ""
        except Exception as error:  # noqa: BLE001 - a teacher failure falls back to a composed rationale
            with self._lock:
                self.failures += 1
                self.asked += 1
            logger.warning("teacher request failed (%s); using a composed explanation", error)
            return None
        with self._lock:
            self.failures = 0
            self.asked += 1
        return text

    def answer_many(self, examples: list[TrainingExample]) -> list[str | None]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self.answer, examples))

    def close(self) -> None:
        self.backend.close()


def configured_teacher() -> Any:
    """The configured teacher, or None."""
    base_url = _setting("TRAINER_TEACHER_BASE_URL")
    if not base_url:
        return None
    return OpenAITeacher(base_url, _setting("TRAINER_TEACHER_MODEL"), _setting("TRAINER_TEACHER_API_KEY"))
