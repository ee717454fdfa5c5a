"""A readable diff between two policy versions.

Both sides are Policy JSON documents (``documents.version_document``), so a
version can be compared with the draft or with an imported file alike.
Categories are matched by code (without case, as the guard's parser does); one whose
content is the same but whose place changed is "moved", not "changed".
Text fields get a word-level diff; example lists a line-level one.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

Op = Literal["eq", "add", "del"]
Segment = tuple[Op, str]

FIELD_LABELS = {
    "name": "Name",
    "description": "Description",
    "code": "Code",
    "violating_examples": "Violating examples",
    "allowed_examples": "Allowed examples",
    "severity": "Severity",
    "action": "Action",
}
TEXT_FIELDS = ("code", "name", "description")
LIST_FIELDS = ("violating_examples", "allowed_examples")
CHOICE_FIELDS = ("severity", "action")


@dataclass
class FieldChange:
    field: str
    kind: Literal["text", "list", "choice"]
    segments: list[Segment]

    @property
    def label(self) -> str:
        return FIELD_LABELS.get(self.field, self.field)


@dataclass
class CategoryChange:
    # "moved": same content, another place among the categories both sides share.
    status: Literal["added", "removed", "changed", "moved"]
    code: str
    name: str
    category: dict[str, Any]
    fields: list[FieldChange] = field(default_factory=list)
    # Set when the category's place among the categories both sides share changed.
    moved: tuple[int, int] | None = None


@dataclass
class PolicyDiff:
    header: list[FieldChange]
    categories: list[CategoryChange]
    unchanged: int

    @property
    def is_empty(self) -> bool:
        return not self.header and not self.categories

    def count(self, status: str) -> int:
        return sum(1 for c in self.categories if c.status == status)

    @property
    def summary(self) -> str:
        if self.is_empty:
            return "No differences."
        parts = [f"{self.count(s)} {s}" for s in ("added", "removed", "changed") if self.count(s)]
        moved = sum(1 for c in self.categories if c.moved)
        if moved:
            parts.append(f"{moved} moved")
        if self.header:
            parts.append("policy " + " and ".join(c.label.lower() for c in self.header) + " changed")
        return ", ".join(parts) + "."


_WORDS = re.compile(r"\s+|[^\s]+")


def text_segments(old: str, new: str) -> list[Segment]:
    """Word-level diff: unchanged runs, deletions and insertions, in reading order."""
    old_tokens, new_tokens = _WORDS.findall(old), _WORDS.findall(new)
    segments: list[Segment] = []
    matcher = difflib.SequenceMatcher(a=old_tokens, b=new_tokens, autojunk=False)
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op == "equal":
            segments.append(("eq", "".join(old_tokens[a1:a2])))
            continue
        if a2 > a1:
            segments.append(("del", "".join(old_tokens[a1:a2])))
        if b2 > b1:
            segments.append(("add", "".join(new_tokens[b1:b2])))
    return segments


def list_segments(old: list[str], new: list[str]) -> list[Segment]:
    segments: list[Segment] = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op == "equal":
            segments.extend(("eq", item) for item in old[a1:a2])
            continue
        segments.extend(("del", item) for item in old[a1:a2])
        segments.extend(("add", item) for item in new[b1:b2])
    return segments


def field_changes(old: dict[str, Any], new: dict[str, Any], names: tuple[str, ...]) -> list[FieldChange]:
    changes: list[FieldChange] = []
    for name in names:
        before, after = old.get(name, ""), new.get(name, "")
        if before == after:
            continue
        if name in LIST_FIELDS:
            changes.append(FieldChange(name, "list", list_segments(list(before or []), list(after or []))))
        elif name in CHOICE_FIELDS:
            changes.append(FieldChange(name, "choice", [("del", str(before)), ("add", str(after))]))
        else:
            changes.append(FieldChange(name, "text", text_segments(str(before or ""), str(after or ""))))
    return changes


def _moved_codes(old_order: list[str], new_order: list[str]) -> set[str]:
    """Codes outside the longest common ordering of the shared categories."""
    matcher = difflib.SequenceMatcher(a=old_order, b=new_order, autojunk=False)
    kept = {code for block in matcher.get_matching_blocks() for code in old_order[block.a : block.a + block.size]}
    return set(old_order) - kept


def diff_documents(old: dict[str, Any], new: dict[str, Any]) -> PolicyDiff:
    header = field_changes(old, new, ("name", "description"))
    old_by_key = {c["code"].casefold(): c for c in old.get("categories", [])}
    new_by_key = {c["code"].casefold(): c for c in new.get("categories", [])}
    old_positions = {key: index for index, key in enumerate(old_by_key)}
    new_positions = {key: index for index, key in enumerate(new_by_key)}
    shared_old_order = [key for key in old_by_key if key in new_by_key]
    shared_new_order = [key for key in new_by_key if key in old_by_key]
    moved = _moved_codes(shared_old_order, shared_new_order)
    category_fields = TEXT_FIELDS + LIST_FIELDS + CHOICE_FIELDS

    changes: list[CategoryChange] = []
    unchanged = 0
    # New side's order first (what the policy now reads like), then removals.
    for key, after in new_by_key.items():
        before = old_by_key.get(key)
        if before is None:
            changes.append(CategoryChange("added", after["code"], after["name"], after))
            continue
        fields = field_changes(before, after, category_fields)
        move = (old_positions[key] + 1, new_positions[key] + 1) if key in moved else None
        if fields or move:
            changes.append(CategoryChange("changed" if fields else "moved", after["code"], after["name"], after, fields, move))
        else:
            unchanged += 1
    for key, before in old_by_key.items():
        if key not in new_by_key:
            changes.append(CategoryChange("removed", before["code"], before["name"], before))
    return PolicyDiff(header=header, categories=changes, unchanged=unchanged)
