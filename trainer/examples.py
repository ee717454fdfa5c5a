"""Training examples: gold labels, the rendered example and its target, and the policy (de)serialisation.

``gold_from_record`` turns a corpus record into ``GoldLabels`` (see ``trainer.data`` for the
masked and derived fields); ``TrainingExample.columns`` is one dataset row for the recipes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from guard.contract import SAFE, UNSAFE, PolicySpec, Verdict, format_answer, render
from guard.spec_json import TAUGHT_FIELDS, spec_from_json, spec_to_json  # noqa: F401 - re-exported
from trainer import licences as licensing

# Gemma's end of a model turn, then the tokenizer's end of sequence: whichever a
# backend stops at, the answer ends there (the parser strips both).
ANSWER_END = "<end_of_turn><eos>"


# --------------------------------------------------------------------------- policy (de)serialisation


# ``spec_to_json``/``spec_from_json`` live in ``guard.spec_json`` (moderation's draft replays use them too).


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class GoldLabels:
    prompt_label: str
    response_label: str | None
    refusal_label: str | None
    categories: tuple[str, ...]
    # False when the record is unsafe but its source names no category (taxonomy "none").
    categories_known: bool
    # Answer fields whose target value is a placeholder (no gold): masked in the SFT loss.
    unknown: tuple[str, ...] = ()
    # Answer fields whose gold was derived here (e.g. compliance of a benign answer), not given by the source.
    derived: tuple[str, ...] = ()

    @property
    def is_unsafe(self) -> bool:
        return UNSAFE in (self.prompt_label, self.response_label)

    @property
    def label(self) -> str:
        return UNSAFE if self.is_unsafe else SAFE

    def verdict(self, explanation: str = "") -> Verdict:
        return Verdict(
            prompt_label=self.prompt_label,
            response_label=self.response_label,
            refusal_label=self.refusal_label,
            categories=list(self.categories),
            explanation=explanation,
        )


@dataclass
class TrainingExample:
    id: str
    source: str  # file stem, or "reviewed:<slug>"
    policy: PolicySpec
    prompt: str
    response: str | None
    gold: GoldLabels
    explanation: str = ""
    explanation_origin: str = "composed"  # composed | teacher
    licence: str = licensing.UNKNOWN
    # For a safe example shown under a policy without its category: what is not covered (the explanation says so).
    not_covered: str | None = None
    not_covered_how: str = "does not list"

    @property
    def has_response(self) -> bool:
        return self.response is not None and self.response.strip() != ""

    @property
    def task(self) -> str:
        """refusal (a source refusal label), response (an AI response) or prompt; see ``trainer.mix``."""
        if self.has_response and self.gold.refusal_label and "refusal" not in self.gold.unknown + self.gold.derived:
            return "refusal"
        return "response" if self.has_response else "prompt"

    @property
    def task_label(self) -> str:
        task = self.task
        if task == "refusal":
            return str(self.gold.refusal_label)
        return str(self.gold.response_label if task == "response" else self.gold.prompt_label)

    def mix_key(self) -> tuple[str, str, str]:
        return self.task, self.task_label, self.source

    @property
    def masked_fields(self) -> list[str]:
        fields = [name for name in ("prompt", "response", "refusal") if name in self.gold.unknown]
        if self.gold.is_unsafe and not self.gold.categories_known:
            fields.append("categories")
        return fields

    @property
    def target(self) -> str:
        """The answer block the model should write (without the end-of-turn marker)."""
        return format_answer(self.gold.verdict(self.explanation), self.has_response)

    def input_text(self, tokenizer: Any = None, max_text_tokens: int | None = None) -> str:
        rendered = render(self.policy, self.prompt, self.response, "reason", tokenizer=tokenizer, max_text_tokens=max_text_tokens)
        return rendered.to_text(tokenizer)

    def columns(self, tokenizer: Any = None, max_text_tokens: int | None = None) -> dict[str, Any]:
        """One dataset row: the rendered prompt, the target, and the gold labels for the rewards."""
        return {
            "prompt": self.input_text(tokenizer, max_text_tokens),
            "completion": self.target + ANSWER_END,
            "example_id": self.id,
            "source": self.source,
            "policy": spec_to_json(self.policy),
            "has_response": self.has_response,
            # "" = no gold for that field (the reward skips it).
            "gold_prompt": "" if "prompt" in self.gold.unknown else self.gold.prompt_label,
            "gold_response": self.gold.response_label or "",
            "gold_refusal": "" if "refusal" in self.gold.unknown else (self.gold.refusal_label or ""),
            "masked_fields": json.dumps(self.masked_fields),
            "licence": self.licence,
            # JSON, not a list column: Arrow cannot type a column whose lists are all empty.
            "gold_categories": json.dumps(list(self.gold.categories)),
            "categories_known": self.gold.categories_known,
        }


class Teacher(Protocol):
    """Writes the answer for an example given its gold labels; None when it cannot."""

    name: str

    def answer(self, example: TrainingExample) -> str | None: ...


def completion_mask_spans(completion: str, fields: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans (value with its leading space) of the answer fields whose tokens get no loss."""
    spans = []
    for name in fields:
        match = re.search(rf"^{re.escape(name)}:( .*)$", completion, re.MULTILINE)
        if match:
            spans.append((match.start(1), match.end(1)))
    return spans


def _label(value: Any, choices: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    text = str(value).strip().casefold()
    return text if text in choices else None


REFUSAL_OPENING = re.compile(
    r"^\W*(i['’]?m sorry|i am sorry|sorry|i can['’]?t|i cannot|i can not|i won['’]?t|i will not|i['’]?m not able|"
    r"i am not able|i['’]?m unable|i am unable|as an ai|i must decline|unfortunately,? i|i apologi[sz]e|no,? i)",
    re.IGNORECASE,
)


def looks_like_refusal(response: str) -> bool:
    return bool(REFUSAL_OPENING.match(response.strip()[:200]))


def gold_from_record(record: dict[str, Any], codes: list[str]) -> GoldLabels | None:
    """Gold labels usable as a training target, or None (no label at all, or a response without a response label).

    A missing prompt label (response-harm sets) or refusal label becomes a masked
    placeholder; see the module docstring for the derived refusal labels.
    """
    prompt_label = _label(record.get("prompt_label"), (SAFE, UNSAFE))
    response = record.get("response") or ""
    has_response = bool(response.strip())
    response_label = _label(record.get("response_label"), (SAFE, UNSAFE)) if has_response else None
    if has_response and response_label is None:
        return None  # the contract needs a response label whenever there is a response
    unknown: list[str] = []
    derived: list[str] = []
    if prompt_label is None:
        if response_label is None:
            return None
        prompt_label = response_label  # placeholder (masked): an unsafe response usually answers an unsafe prompt
        unknown.append("prompt")
    refusal_label = _label(record.get("refusal_label"), ("refusal", "compliance")) if has_response else None
    if has_response and refusal_label is None:
        if response_label == UNSAFE:
            refusal_label = "compliance"  # it gave the harmful content
            derived.append("refusal")
        elif "prompt" not in unknown and prompt_label == SAFE and not looks_like_refusal(response):
            refusal_label = "compliance"  # a benign answer to a benign request
            derived.append("refusal")
        else:
            refusal_label = "refusal" if looks_like_refusal(response) else "compliance"  # placeholder (masked)
            unknown.append("refusal")
    unsafe = UNSAFE in (prompt_label, response_label)
    return GoldLabels(
        prompt_label=prompt_label,
        response_label=response_label,
        refusal_label=refusal_label,
        categories=tuple(codes) if unsafe else (),
        # An unsafe record without codes (taxonomy "none") has unknown, not empty, gold categories.
        categories_known=bool(codes) or not unsafe,
        unknown=tuple(unknown),
        derived=tuple(derived),
    )


def gold_for_row(row: dict[str, Any]) -> GoldLabels:
    """Gold labels back from a dataset row made by ``TrainingExample.columns``."""
    return GoldLabels(
        prompt_label=row["gold_prompt"],
        response_label=row.get("gold_response") or None,
        refusal_label=row.get("gold_refusal") or None,
        categories=tuple(json.loads(row.get("gold_categories") or "[]")),
        categories_known=bool(row.get("categories_known", True)),
        # An empty gold column is a field without gold (masked in SFT, skipped by the rewards).
        unknown=tuple(name for name, column in (("prompt", "gold_prompt"), ("refusal", "gold_refusal"))
                      if not row.get(column) and (name == "prompt" or row.get("has_response"))),
    )
