"""How an audit entry's before/after values read for an operator: keys and values, what changed, never Python dicts.

Used by the item page's audit section and by the app-wide audit log (ops/audit.py).
"""

from __future__ import annotations

from typing import Any

EMPTY = (None, "", [], {})


def display(value: Any) -> str:
    """A value as an operator reads it: lists joined, empty as a dash, nested objects as key=value."""
    if value is None or value == "" or value == []:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(display(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={display(v)}" for k, v in value.items())
    return str(value)


def details(before: dict | None, after: dict | None) -> list[tuple[str, Any, Any, bool]]:
    """(key, before, after, changed): keys on both sides show a change; a key on one side only is a plain fact."""
    before, after = before or {}, after or {}
    if not before:
        return [(k, None, v, False) for k, v in after.items() if v not in EMPTY]
    both = [(k, before[k], after[k], before[k] != after[k]) for k in after if k in before]
    only_before = [(f"{k} (before)", None, v, False) for k, v in before.items() if k not in after and v not in EMPTY]
    only_after = [(k, None, v, False) for k, v in after.items() if k not in before and v not in EMPTY]
    return [*both, *only_before, *only_after]


def rows(before: dict | None, after: dict | None) -> list[tuple[str, str, str, bool]]:
    """``details`` as display text."""
    return [(k, display(b), display(a), changed) for k, b, a, changed in details(before, after)]
