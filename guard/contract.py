"""The guard contract: the ONE place that defines what the guard model reads and writes.

Inference (every backend), training (SFT targets, GRPO rewards, DPO pairs) and
evaluation all import this module; nothing else may format a guard prompt or
parse a guard answer.

Model input
    A policy block (the operator's taxonomy: code, name, description, optional
    examples) followed by the conversation. The policy comes first so that the
    shared prefix is cached across requests (vLLM prefix caching, KV reuse).

Model output (the *answer-first* format)::

    prompt: unsafe
    response: none
    refusal: none
    categories: S1, S9
    explanation: Asks for step-by-step synthesis of a nerve agent; violates S1 (weapons).

Why answer first, explanation after: a 270M model gains little from a long
chain of thought, and putting the fixed answer block first means

* ``fast`` mode reads the very same decision from the logits at the label
  positions (no generation), so fast and reason modes agree by construction;
* constrained decoding is trivial: each label slot allows a handful of tokens,
  the categories slot allows the policy's codes, and only the explanation is
  free text (budget: ``EXPLANATION_WORD_BUDGET`` words, as in GSPR).

The parser is strict about labels and category codes (an unknown code is a
parse error, never silently kept) and tolerant of whitespace and case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

Mode = Literal["fast", "reason"]
MODES: tuple[Mode, ...] = ("fast", "reason")

EXPLANATION_WORD_BUDGET = 40
NONE = "none"
SAFE, UNSAFE = "safe", "unsafe"
REFUSAL, COMPLIANCE = "refusal", "compliance"

# Answer block, in order. Every field is one line "name: value".
FIELD_PROMPT = "prompt"
FIELD_RESPONSE = "response"
FIELD_REFUSAL = "refusal"
FIELD_CATEGORIES = "categories"
FIELD_EXPLANATION = "explanation"
ANSWER_FIELDS = (FIELD_PROMPT, FIELD_RESPONSE, FIELD_REFUSAL, FIELD_CATEGORIES, FIELD_EXPLANATION)
# The closed vocabularies of the label fields (fast mode scores exactly these words).
LABEL_CHOICES: dict[str, tuple[str, ...]] = {
    FIELD_PROMPT: (SAFE, UNSAFE),
    FIELD_RESPONSE: (SAFE, UNSAFE, NONE),
    FIELD_REFUSAL: (REFUSAL, COMPLIANCE, NONE),
}
# Default decision threshold for multi-label category scoring in fast mode:
# a code is predicted when its probability in the categories slot reaches this.
CATEGORY_THRESHOLD = 0.25

INSTRUCTIONS = (
    "You are a content safety guard. Judge the conversation below against the policy. "
    "A text is unsafe only if it violates one of the policy's categories."
)
FORMAT_HELP = (
    "Answer with exactly these five lines:\n"
    "prompt: safe or unsafe (the user's prompt)\n"
    "response: safe, unsafe, or none if there is no AI response\n"
    "refusal: refusal, compliance, or none if there is no AI response\n"
    "categories: the violated category codes separated by commas, or none\n"
    f"explanation: at most {EXPLANATION_WORD_BUDGET} words naming the violated rule"
)


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class CategorySpec:
    code: str
    name: str
    description: str = ""
    violating_examples: tuple[str, ...] = ()
    allowed_examples: tuple[str, ...] = ()
    # Examples taught by reviewers' decisions (``policies.teaching``): read by the latent heads
    # only, never rendered into the model's input (a queue's worth would swamp the policy block).
    taught_violating: tuple[str, ...] = ()
    taught_allowed: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicySpec:
    """What the model sees of a policy version. Django-free on purpose.

    ``policies.models.PolicyVersion.to_spec()`` and the taxonomy presets both
    produce one, so training and evaluation run without a database.
    """

    name: str
    categories: tuple[CategorySpec, ...]
    description: str = ""

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.categories)

    def category(self, code: str) -> CategorySpec | None:
        wanted = code.strip().casefold()
        for category in self.categories:
            if category.code.casefold() == wanted:
                return category
        return None


class SupportsPolicySpec(Protocol):
    def to_spec(self) -> PolicySpec: ...


def as_spec(policy: PolicySpec | SupportsPolicySpec) -> PolicySpec:
    return policy if isinstance(policy, PolicySpec) else policy.to_spec()


def render_policy(policy: PolicySpec | SupportsPolicySpec) -> str:
    """The policy block exactly as the model reads it (also shown in the UI)."""
    spec = as_spec(policy)
    lines = [f"Policy: {spec.name}"]
    if spec.description:
        lines.append(spec.description.strip())
    lines.append("Categories:")
    for category in spec.categories:
        line = f"{category.code}: {category.name}"
        if category.description and category.description.strip() != category.name:
            line += f" - {category.description.strip()}"
        lines.append(line)
        for example in category.violating_examples:
            lines.append(f"  violates: {example.strip()}")
        for example in category.allowed_examples:
            lines.append(f"  allowed: {example.strip()}")
    if not spec.categories:
        lines.append("(none: judge general harmfulness)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- input


class Tokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


@dataclass(frozen=True)
class GuardInput:
    """A rendered request: chat messages plus what fast mode appends."""

    system: str
    user: str
    mode: Mode
    has_response: bool
    truncated: bool = False

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]

    def to_text(self, tokenizer: Any = None) -> str:
        """The full model input as text, ending where the answer block begins.

        Uses the tokenizer's chat template when it has one (user-supplied
        models); otherwise Gemma's turn markers, which the embedded model knows.
        """
        template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
        if template:
            try:
                return tokenizer.apply_chat_template(self.messages, tokenize=False, add_generation_prompt=True)
            except Exception:  # noqa: BLE001 - templates without a system role: fold it in
                merged = [{"role": "user", "content": f"{self.system}\n\n{self.user}"}]
                return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
        return f"<start_of_turn>user\n{self.system}\n\n{self.user}<end_of_turn>\n<start_of_turn>model\n"


def truncate_text(text: str, max_tokens: int | None, tokenizer: Tokenizer | None) -> tuple[str, bool]:
    """Keep the head and the tail of an over-long text (both matter for moderation).

    Without a tokenizer (HTTP backends) four characters stand for one token.
    """
    if not max_tokens or max_tokens <= 0:
        return text, False
    marker = " [...] "
    if tokenizer is None:
        limit = max_tokens * 4
        if len(text) <= limit:
            return text, False
        half = limit // 2
        return text[:half] + marker + text[-half:], True
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= max_tokens:
        return text, False
    half = max_tokens // 2
    head = tokenizer.decode(ids[:half], skip_special_tokens=True)
    tail = tokenizer.decode(ids[-half:], skip_special_tokens=True)
    return head + marker + tail, True


def render(
    policy: PolicySpec | SupportsPolicySpec,
    prompt: str,
    response: str | None = None,
    mode: Mode = "reason",
    *,
    tokenizer: Tokenizer | None = None,
    max_text_tokens: int | None = None,
) -> GuardInput:
    """Render one request. ``max_text_tokens`` bounds the conversation text
    (the policy is never truncated); truncation is recorded, never an error."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    has_response = response is not None and response.strip() != ""
    budget = max_text_tokens
    if budget and has_response:
        budget = max(budget // 2, 1)
    prompt_text, cut_prompt = truncate_text(prompt.strip(), budget, tokenizer)
    user = f"User prompt:\n{prompt_text}"
    cut_response = False
    if has_response:
        response_text, cut_response = truncate_text(response.strip(), budget, tokenizer)  # type: ignore[union-attr]
        user += f"\n\nAI response:\n{response_text}"
    else:
        user += "\n\nAI response: none"
    system = f"{INSTRUCTIONS}\n\n{render_policy(policy)}\n\n{FORMAT_HELP}"
    return GuardInput(system=system, user=user, mode=mode, has_response=has_response, truncated=cut_prompt or cut_response)


# --------------------------------------------------------------------------- output


@dataclass
class Verdict:
    prompt_label: str
    response_label: str | None = None
    refusal_label: str | None = None
    categories: list[str] = field(default_factory=list)
    explanation: str = ""
    # Probability that the judged text is unsafe: the response when there is
    # one, else the prompt. None when the backend cannot score (e.g. HTTP).
    confidence: float | None = None
    # Per-field probabilities from fast scoring, e.g. {"prompt": {"unsafe": 0.93, "safe": 0.07}}.
    probabilities: dict[str, dict[str, float]] = field(default_factory=dict)
    truncated: bool = False
    mode: str = "reason"
    raw_output: str = ""
    # What decided the labels: "heads" (latent heads on the backbone's hidden states,
    # ``guard.heads``), "logits" (the answer block's label logits: a model without heads),
    # or "generation" (a served model's generated answer: vLLM, OpenAI-compatible servers).
    decided_by: str = "logits"
    # Where one stretch of the text decided, that stretch: the part of a long prompt in which the latent heads'
    # peak head found a harmful request (``guard.peak_reading``). Empty otherwise.
    evidence: str = ""
    # The same for a long response: the stretch in which the response peak head found harmful content.
    response_evidence: str = ""
    # Set when the model's answer did not parse; the labels are then the
    # conservative fallback of ``failed_verdict`` and evaluation counts the
    # record as wrong (and reports it) instead of dropping it.
    parse_error: str | None = None

    @property
    def is_unsafe(self) -> bool:
        return UNSAFE in (self.prompt_label, self.response_label)

    @property
    def explanation_words(self) -> int:
        return count_words(self.explanation)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ParseError:
    reason: str
    raw_output: str = ""


@dataclass
class ParseResult:
    verdict: Verdict | None = None
    error: ParseError | None = None

    @property
    def ok(self) -> bool:
        return self.verdict is not None


def failed_verdict(error: ParseError, has_response: bool, mode: str = "reason") -> Verdict:
    """The verdict a backend returns when the model's answer does not parse.

    Labels are "unsafe" (fail closed: a broken answer goes to a human, not
    through); evaluation counts it as a parse failure, and wrong.
    """
    return Verdict(
        prompt_label=UNSAFE,
        response_label=UNSAFE if has_response else None,
        refusal_label=None,
        explanation="",
        mode=mode,
        raw_output=error.raw_output,
        parse_error=error.reason,
    )


def count_words(text: str) -> int:
    return len(text.split())


def format_answer(verdict: Verdict, has_response: bool) -> str:
    """The exact text the model should produce for ``verdict`` (SFT targets, DPO pairs)."""
    response = verdict.response_label if has_response and verdict.response_label else NONE
    refusal = verdict.refusal_label if has_response and verdict.refusal_label else NONE
    categories = ", ".join(verdict.categories) if verdict.categories else NONE
    return (
        f"{FIELD_PROMPT}: {verdict.prompt_label}\n"
        f"{FIELD_RESPONSE}: {response}\n"
        f"{FIELD_REFUSAL}: {refusal}\n"
        f"{FIELD_CATEGORIES}: {categories}\n"
        f"{FIELD_EXPLANATION}: {verdict.explanation.strip()}"
    )


_LINE = re.compile(r"^\s*([A-Za-z_]+)\s*[:=]\s*(.*?)\s*$")


def parse(text: str, policy: PolicySpec | SupportsPolicySpec, has_response: bool | None = None) -> ParseResult:
    """Parse a model answer into a ``Verdict`` or a ``ParseError`` saying why.

    Strict: every label must be one of its field's choices; every category
    code must belong to ``policy``; a verdict with no unsafe label may not
    name categories. Tolerant: case, surrounding whitespace, blank lines,
    a trailing end-of-turn marker, ``=`` instead of ``:``.
    """
    spec = as_spec(policy)
    raw = text if isinstance(text, str) else ""
    cleaned = raw.replace("<end_of_turn>", "").replace("<eos>", "").strip()
    if not cleaned:
        return ParseResult(error=ParseError("empty output", raw))
    fields: dict[str, str] = {}
    current: str | None = None
    for line in cleaned.splitlines():
        if not line.strip():
            continue
        match = _LINE.match(line)
        key = match.group(1).lower() if match else None
        if match and key in ANSWER_FIELDS:
            if key in fields:
                return ParseResult(error=ParseError(f"field {key!r} appears twice", raw))
            fields[key] = match.group(2)
            current = key
        elif current == FIELD_EXPLANATION:
            # The explanation may wrap onto further lines.
            fields[FIELD_EXPLANATION] += " " + line.strip()
        else:
            return ParseResult(error=ParseError(f"unexpected line {line.strip()[:60]!r}", raw))
    missing = [name for name in ANSWER_FIELDS if name not in fields]
    if missing:
        return ParseResult(error=ParseError(f"missing field(s): {', '.join(missing)}", raw))

    labels: dict[str, str | None] = {}
    for name, choices in LABEL_CHOICES.items():
        value = fields[name].strip().strip(".").casefold()
        if value not in choices:
            return ParseResult(error=ParseError(f"{name}: {fields[name]!r} is not one of {', '.join(choices)}", raw))
        labels[name] = None if value == NONE else value

    if has_response is False and (labels[FIELD_RESPONSE] or labels[FIELD_REFUSAL]):
        return ParseResult(error=ParseError("response/refusal labelled although there is no AI response", raw))
    if has_response is True and labels[FIELD_RESPONSE] is None:
        return ParseResult(error=ParseError("response: 'none' although there is an AI response", raw))

    codes: list[str] = []
    raw_codes = fields[FIELD_CATEGORIES].strip().strip(".")
    if raw_codes.casefold() != NONE:
        for piece in raw_codes.split(","):
            piece = piece.strip()
            if not piece:
                continue
            category = spec.category(piece)
            if category is None:
                known = ", ".join(spec.codes) or "no categories"
                return ParseResult(error=ParseError(f"unknown category code {piece!r} (policy has {known})", raw))
            if category.code not in codes:
                codes.append(category.code)
    if codes and UNSAFE not in (labels[FIELD_PROMPT], labels[FIELD_RESPONSE]):
        return ParseResult(error=ParseError("categories given for a verdict with no unsafe label", raw))

    verdict = Verdict(
        prompt_label=labels[FIELD_PROMPT] or SAFE,
        response_label=labels[FIELD_RESPONSE],
        refusal_label=labels[FIELD_REFUSAL],
        categories=codes,
        explanation=fields[FIELD_EXPLANATION].strip(),
        mode="reason",
        raw_output=raw,
    )
    return ParseResult(verdict=verdict)


def answer_regex(policy: PolicySpec | SupportsPolicySpec, has_response: bool) -> str:
    """A regular expression every valid answer matches (vLLM structured output).

    The explanation is bounded by characters (a word budget is not regular);
    ~ 8 characters a word leaves room for ``EXPLANATION_WORD_BUDGET`` words.
    """
    spec = as_spec(policy)
    codes = "|".join(re.escape(code) for code in spec.codes)
    if has_response:
        response = "(safe|unsafe)"
        refusal = "(refusal|compliance)"
    else:
        response = refusal = "none"
    category_list = f"({codes})(, ({codes}))*|none" if codes else "none"
    max_chars = EXPLANATION_WORD_BUDGET * 8
    return (
        f"prompt: (safe|unsafe)\nresponse: {response}\nrefusal: {refusal}\n"
        f"categories: ({category_list})\nexplanation: [^\\n]{{1,{max_chars}}}"
    )


def primary_field(has_response: bool) -> str:
    """The field whose unsafe probability is the verdict's ``confidence``."""
    return FIELD_RESPONSE if has_response else FIELD_PROMPT


def answer_prefix_before(field_name: str, labels: dict[str, str], codes: Iterable[str] = ()) -> str:
    """The answer text up to and including ``"<field_name>:"``, given earlier labels.

    Fast scoring teacher-forces the argmax labels of earlier fields and reads the
    next field's label distribution at this position.
    """
    parts: list[str] = []
    for name in ANSWER_FIELDS:
        if name == field_name:
            parts.append(f"{name}:")
            return "\n".join(parts)
        if name == FIELD_CATEGORIES:
            value = ", ".join(codes) or NONE
        else:
            value = labels.get(name, NONE)
        parts.append(f"{name}: {value}")
    raise ValueError(f"unknown answer field {field_name!r}")


# Where a fast-mode generation is stopped: every label line has been written.
FAST_STOP = f"\n{FIELD_EXPLANATION}:"


def verdict_from_generation(text: str, policy: PolicySpec | SupportsPolicySpec, rendered: GuardInput) -> Verdict:
    """The verdict of a generated answer (the HTTP and vLLM backends generate; transformers scores).

    A fast-mode answer cut at ``FAST_STOP`` gets the stop string back so it
    parses; an unparseable answer becomes ``failed_verdict`` (raw text kept).
    """
    if rendered.mode == "fast" and FIELD_EXPLANATION not in text:
        text = text.rstrip("\n") + FAST_STOP
    parsed = parse(text, policy, rendered.has_response)
    if parsed.verdict is None:
        assert parsed.error is not None
        verdict = failed_verdict(parsed.error, rendered.has_response, mode=rendered.mode)
    else:
        verdict = parsed.verdict
    verdict.mode = rendered.mode
    verdict.raw_output = text
    verdict.truncated = rendered.truncated
    verdict.decided_by = "generation"
    return verdict
