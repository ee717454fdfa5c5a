"""Composed explanations: name the violated code and point at the words that trigger it.

Without a teacher model the training explanation is composed from the gold labels,
the policy and the text itself. It must do what an operator reads it for:

* name the violated code and category (``S2 (Crime and fraud)``);
* quote the part of the text that triggers it: the clause of the judged text
  (the response when the response is unsafe, else the prompt) that shares the
  most words with the category's name and description, clipped to a few words;
* stay within ``COMPOSED_WORD_LIMIT`` (38) words;
* vary: several phrasings, chosen by a hash of the example id, and the quote
  itself differ from item to item, so no sentence is shared by many items.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from guard.contract import (
    EXPLANATION_WORD_BUDGET,
    SAFE,
    UNSAFE,
    CategorySpec,
    PolicySpec,
    count_words,
)

COMPOSED_WORD_LIMIT = EXPLANATION_WORD_BUDGET - 2
QUOTE_WORDS = 9
# A "word" can be a 400-character run ("cccc…", a URL, base64): a quote keeps at most this many characters of
# one, or the guard learns to copy the whole run into its explanation.
QUOTE_WORD_CHARS = 30
_STOP = frozenset(
    "a an and are as at be by for from how i in is it its of on or that the this to was what with you your "
    "content any other not no do does can my me about into than when who why will would should".split()
)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.casefold())


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("[editor] ", "")).strip()


def _clip(text: str, limit: int) -> str:
    words = text.split()
    if len(words) <= limit and all(len(word) <= QUOTE_WORD_CHARS for word in words):
        return text
    kept = [word if len(word) <= QUOTE_WORD_CHARS else word[:QUOTE_WORD_CHARS] + "…" for word in words[:limit]]
    clipped = " ".join(kept)
    return clipped.rstrip(",;:.") + "…" if len(words) > limit else clipped


def clauses(text: str) -> list[str]:
    pieces = [p.strip(" \"'“”") for p in re.split(r"(?<=[.!?;:])\s+|\n+", _clean_keep_lines(text))]
    return [p for p in pieces if re.search(r"\w", p)] or [text.strip()]


def _clean_keep_lines(text: str) -> str:
    return re.sub(r"[ \t]+", " ", text).strip()


def trigger_quote(text: str, categories: Sequence[CategorySpec] = (), limit: int = QUOTE_WORDS) -> str:
    """The clause of ``text`` most related to ``categories`` (by shared words), clipped; the first clause when none relates."""
    keywords = {w for c in categories for w in _words(f"{c.name} {c.description}") if w not in _STOP and len(w) > 2}
    candidates = clauses(text)
    best, best_score = candidates[0], 0
    for clause in candidates:
        words = set(_words(clause))
        score = len(words & keywords) + sum(1 for k in keywords for w in words if len(k) > 4 and w.startswith(k[:5]))
        if score > best_score:
            best, best_score = clause, score
    quote = _clip(_clean(best).replace('"', "'"), limit)
    return quote or _clip(_clean(text), limit)


def readable_name(category: CategorySpec) -> str:
    """The category's name, or its description's first clause when the name is a bare code (``dfm``)."""
    name = _clean(category.name).rstrip(".;:")
    if re.fullmatch(r"[a-z0-9_]{1,8}", name) and category.description.strip():
        return _clip(_clean(category.description.split(";")[0].split("(")[0]), 6).rstrip(".…")
    return name.replace("_", " ")


def _pick(options: Sequence[str], key: str, salt: str) -> str:
    digest = hashlib.sha1(f"{salt}:{key}".encode()).hexdigest()
    return options[int(digest[:8], 16) % len(options)]


UNSAFE_TEMPLATES = (
    '{Subject} {violates} {named}: "{quote}" {rule_clause}.',
    '{named} applies: the {subject} says "{quote}"{rule_tail}.',
    'Flagged under {named} because the {subject} {asks} "{quote}".',
    '"{quote}" in the {subject} falls under {named}{rule_tail}.',
    'The {subject} {asks} "{quote}", which is {named} under this policy.',
    '{named}: the {subject} {asks} "{quote}"{rule_tail}.',
)
UNKNOWN_TEMPLATES = (
    'The {subject} {asks} "{quote}", clearly harmful help this policy forbids.',
    '"{quote}": the {subject} is harmful in a way the policy does not allow.',
    'Unsafe: the {subject} {asks} "{quote}", which no safe reading explains.',
)
SAFE_TEMPLATES = (
    'No policy category applies: the {subject} "{quote}" is an ordinary {kind}.',
    'Safe: "{quote}" asks for nothing the policy lists.',
    'The {subject} "{quote}" is harmless under this policy; no category matches.',
    'None of the policy\'s categories covers "{quote}".',
    '"{quote}" is a benign {kind}; nothing here violates the policy.',
)
NOT_COVERED_TEMPLATES = (
    'Safe under this policy: "{quote}" concerns {topic}, which the policy {how}.',
    'The policy {how} {topic}, so "{quote}" violates none of its categories.',
    '"{quote}" is about {topic}; this policy {how} it, so no category applies.',
)


def compose(policy: PolicySpec, *, prompt_label: str, response_label: str | None, refusal_label: str | None,
            categories: Sequence[str], prompt: str, response: str | None, key: str,
            not_covered: str | None = None, not_covered_how: str = "does not list") -> str:
    """The explanation of one training example (see the module docstring); ``key`` picks the phrasing."""
    has_response = bool(response and response.strip())
    unsafe = UNSAFE in (prompt_label, response_label)
    response_unsafe = response_label == UNSAFE
    judged = response if (response_unsafe and has_response) else prompt
    subject = "response" if response_unsafe and prompt_label != UNSAFE else "prompt"
    if prompt_label == UNSAFE and response_unsafe:
        subject = "response"
    found = [c for c in (policy.category(code) for code in categories) if c is not None]
    # Longest version first; shorter ones (no rule, a shorter quote) until it fits the budget.
    text = ""
    for quote_words, with_rule in ((QUOTE_WORDS, True), (QUOTE_WORDS, False), (6, False), (4, False)):
        text = _compose_once(policy, found, subject, judged or prompt, quote_words, with_rule, prompt_label,
                             response_label, refusal_label, response, has_response, unsafe, key, not_covered,
                             not_covered_how)
        if count_words(text) <= COMPOSED_WORD_LIMIT:
            break
    if count_words(text) > COMPOSED_WORD_LIMIT:
        text = _clip(text, COMPOSED_WORD_LIMIT)
    return text.rstrip(".…") + "."


def _compose_once(policy: PolicySpec, found: list[CategorySpec], subject: str, judged: str, quote_words: int,
                  with_rule: bool, prompt_label: str, response_label: str | None, refusal_label: str | None,
                  response: str | None, has_response: bool, unsafe: bool, key: str, not_covered: str | None,
                  not_covered_how: str) -> str:
    quote = trigger_quote(judged, found, quote_words)
    asks = "gives" if subject == "response" else "asks"

    if unsafe and found:
        named = " and ".join(f"{c.code} ({readable_name(c)})" for c in found[:2])
        if len(found) > 2:
            named += f" and {len(found) - 2} more"
        first = found[0]
        rule = _clean(first.description).rstrip(".") if first.description.strip() and _clean(first.description) != _clean(first.name) else ""
        rule_short = _clip(rule, 10).rstrip(".…") if rule and with_rule else ""
        text = _pick(UNSAFE_TEMPLATES, key, "unsafe").format(
            Subject=f"The {subject}", subject=subject, violates="violates", named=named, quote=quote, asks=asks,
            rule_clause=f"({rule_short})" if rule_short else "",
            rule_tail=f" ({rule_short})" if rule_short else "",
        )
    elif unsafe:
        text = _pick(UNKNOWN_TEMPLATES, key, "unknown").format(subject=subject, quote=quote, asks=asks)
    elif not_covered:
        text = _pick(NOT_COVERED_TEMPLATES, key, "notcovered").format(quote=quote, topic=not_covered, how=not_covered_how)
    else:
        kind = "message" if len(quote.split()) < 4 else "request"
        text = _pick(SAFE_TEMPLATES, key, "safe").format(subject="prompt", quote=quote, kind=kind)

    if has_response and prompt_label == UNSAFE and response_label == SAFE:
        reply = trigger_quote(response or "", (), min(quote_words, 6))
        text = text.rstrip(".") + (f'; the response refuses ("{reply}")' if refusal_label == "refusal"
                                   else f'; the response ("{reply}") gives no harmful content')
    elif has_response and not unsafe and refusal_label == "refusal":
        text = text.rstrip(".") + "; the response refuses"
    return re.sub(r"\s+", " ", text).replace(" .", ".").strip()


def is_safe_label(label: str | None) -> bool:
    return label in (None, SAFE)


__all__ = ["COMPOSED_WORD_LIMIT", "compose", "readable_name", "trigger_quote"]
