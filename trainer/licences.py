"""Data licences: what each training example may be used for.

Every training example carries its source's licence, read from the ``MANIFEST.md``
beside the data and mapped to an SPDX-style id (``spdx_ids``). A run may be
restricted to an allowlist (``manage.py train --licences permissive``); the model
card lists the licences of everything the adapter saw and says "non-commercial use
only" when any ``CC-BY-NC`` data was used.

Allowlist syntax: a comma-separated list of ids or aliases. ``all`` (the default)
allows everything, ``permissive`` = MIT, Apache-2.0, CC-BY-* (not -NC) and
CDLA-Permissive-*. An example whose licence is ``unknown`` is allowed only by
``all`` or by naming ``unknown`` explicitly. An example with several ids (e.g.
"MIT + CDLA-Permissive-2.0") is allowed when every one of them is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

UNKNOWN = "unknown"
# Our own generated data (look-alikes, degenerate inputs, policy-following examples):
# released under the project's licence.
PROJECT_LICENCE = "Apache-2.0"
ALL = "all"
PERMISSIVE = "permissive"

_PATTERNS: tuple[tuple[str, str], ...] = (
    # Order matters: NC before plain CC-BY.
    (r"cc[- ]?by[- ]?nc[- ]?sa[- ]?(\d(?:\.\d)?)", "CC-BY-NC-SA-{0}"),
    (r"cc[- ]?by[- ]?nc[- ]?(\d(?:\.\d)?)", "CC-BY-NC-{0}"),
    (r"cc[- ]?by[- ]?sa[- ]?(\d(?:\.\d)?)", "CC-BY-SA-{0}"),
    (r"cc[- ]?by[- ]?(\d(?:\.\d)?)", "CC-BY-{0}"),
    (r"cdla[- ]?permissive[- ]?(\d(?:\.\d)?)", "CDLA-Permissive-{0}"),
    (r"apache[- ]?(?:licen[cs]e[- ]?)?(2\.0)", "Apache-{0}"),
    (r"\bmit\b", "MIT"),
)


def spdx_ids(text: str | None) -> tuple[str, ...]:
    """The licence ids a MANIFEST licence cell names, in order; ``("unknown",)`` when none.

    "CC-BY-4.0 for the data" -> CC-BY-4.0; "MIT (code) + CDLA-Permissive-2.0 (data)" ->
    MIT, CDLA-Permissive-2.0; "unknown in the copy" -> unknown. A cell that names the
    data's licence first ("CC-BY-4.0 for the data"; "data CC-BY-NC-4.0 ..., code Apache-2.0")
    counts only the data's where it says so.
    """
    if not text:
        return (UNKNOWN,)
    lowered = text.casefold()
    if lowered.strip().startswith(UNKNOWN):
        return (UNKNOWN,)
    # "data X, code Y" / "X for the data; repository Y": only the data's licence applies.
    data_part = re.search(r"data\s+(licen[cs]e\s+)?([^,;()]+)", lowered)
    if data_part and ("code" in lowered or "repository" in lowered) and "for the data" not in lowered:
        lowered = data_part.group(2)
    elif "for the data" in lowered:
        lowered = lowered.split("for the data", 1)[0]
    found: list[tuple[int, str]] = []
    taken: list[tuple[int, int]] = []
    for pattern, template in _PATTERNS:
        for match in re.finditer(pattern, lowered):
            if any(start < match.end() and match.start() < end for start, end in taken):
                continue
            taken.append((match.start(), match.end()))
            found.append((match.start(), template.format(*match.groups())))
    ids = []
    for _, value in sorted(found):
        if value not in ids:
            ids.append(value)
    return tuple(ids) or (UNKNOWN,)


def licence_id(text: str | None) -> str:
    """One string for an example: the ids joined with " + " ("MIT + CDLA-Permissive-2.0")."""
    return " + ".join(spdx_ids(text))


def is_permissive(identifier: str) -> bool:
    upper = identifier.upper()
    if "-NC" in upper or "-SA" in upper:
        return False
    return upper in ("MIT", "APACHE-2.0") or upper.startswith("CC-BY-") or upper.startswith("CDLA-PERMISSIVE-")


def is_non_commercial(identifier: str) -> bool:
    return "-NC" in identifier.upper()


def parse_allowlist(value: str | Iterable[str] | None) -> frozenset[str] | None:
    """``None`` (everything allowed) for ``all``/empty; else the allowed ids and aliases (upper-cased).

    Raises ``ValueError`` for an empty item in a list ("MIT,,").
    """
    if value is None:
        return None
    items = [item.strip() for item in (value.split(",") if isinstance(value, str) else value)]
    if not any(items) or any(item.casefold() == ALL for item in items):
        return None
    if not all(items):
        raise ValueError(f"licence allowlist {value!r} has an empty item")
    return frozenset(item.upper() for item in items)


def allowed(licence: str, allowlist: frozenset[str] | None) -> bool:
    """Whether an example with ``licence`` (ids joined by " + ") may be trained on."""
    if allowlist is None:
        return True
    parts = [part.strip() for part in licence.split("+") if part.strip()] or [UNKNOWN]
    for part in parts:
        if part.upper() in allowlist:
            continue
        if PERMISSIVE.upper() in allowlist and is_permissive(part):
            continue
        return False
    return True


def describe_allowlist(allowlist: frozenset[str] | None) -> str:
    if allowlist is None:
        return ALL
    return ", ".join(sorted(item.lower() if item == PERMISSIVE.upper() else item for item in allowlist))


def usage_statement(licences: Iterable[str]) -> str:
    """What the trained artifact may be used for, from the licences of the data it saw."""
    ids = sorted({part.strip() for value in licences for part in value.split("+") if part.strip()})
    non_commercial = [i for i in ids if is_non_commercial(i)]
    if non_commercial:
        return (f"**Non-commercial use only**: the training data includes {', '.join(non_commercial)} sources, "
                "whose terms pass to the trained adapter.")
    if UNKNOWN in ids:
        return ("Some training data has no stated licence (`unknown`); check those sources before commercial use. "
                "No CC-BY-NC data was used.")
    return "Every training source is under a permissive licence (no CC-BY-NC data was used); attribution applies for CC-BY."


__all__ = [
    "PROJECT_LICENCE",
    "UNKNOWN",
    "allowed",
    "describe_allowlist",
    "is_non_commercial",
    "is_permissive",
    "licence_id",
    "parse_allowlist",
    "spdx_ids",
    "usage_statement",
]
