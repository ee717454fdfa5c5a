"""Field rules shared by the category editor (forms) and JSON import (documents).

One set of rules, so that whatever the editor accepts can be exported and
imported again, and whatever import accepts can be edited.
"""

from __future__ import annotations

import re

from policies.models import CODE_PATTERN, Category

CODE_RE = re.compile(rf"^{CODE_PATTERN}$")
SLUG_RE = re.compile(r"^[-a-zA-Z0-9_]{1,80}$")
# Slugs that would shadow a page under /policies/.
RESERVED_SLUGS = frozenset({"new", "import"})
MAX_NAME_CHARS = 200
MAX_DESCRIPTION_CHARS = 4000
MAX_EXAMPLE_CHARS = 2000
MAX_EXAMPLES = 50
MAX_CATEGORIES = 200
SEVERITIES = tuple(Category.Severity.values)
ACTIONS = tuple(Category.Action.values)


def code_problem(code: str) -> str | None:
    """Why ``code`` cannot be a category code, or None when it can."""
    if not code:
        return "A code is required."
    if not CODE_RE.match(code):
        return "Use 1-40 letters, digits, '_' or '-' (no spaces or commas), e.g. S1."
    if code.casefold() == "none":
        return "'none' is reserved: the model writes it when no category applies."
    return None


def duplicate_code_problem(code: str, other_codes: list[str]) -> str | None:
    """Codes are compared without case: the guard's parser reads s1 and S1 as the same code."""
    if code.casefold() in {other.casefold() for other in other_codes}:
        return f"Code {code!r} is already used in this version."
    return None


def slug_problem(slug: str) -> str | None:
    if not SLUG_RE.match(slug):
        return "Use 1-80 letters, digits, '-' or '_'."
    if slug.lower() in RESERVED_SLUGS:
        return f"{slug!r} is reserved; choose another slug."
    return None


def name_problem(name: str) -> str | None:
    if not name.strip():
        return "A name is required."
    if "\n" in name:
        return "The name must be one line."
    if len(name) > MAX_NAME_CHARS:
        return f"At most {MAX_NAME_CHARS} characters."
    return None


def examples_from_text(text: str) -> list[str]:
    """One example per line; blank lines are ignored."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def examples_problem(examples: list[str]) -> str | None:
    if len(examples) > MAX_EXAMPLES:
        return f"At most {MAX_EXAMPLES} examples."
    for index, example in enumerate(examples, start=1):
        if len(example) > MAX_EXAMPLE_CHARS:
            return f"Example {index} is longer than {MAX_EXAMPLE_CHARS} characters."
    return None
