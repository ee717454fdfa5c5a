"""Policy JSON: export a version, import a file (schema in README.md, "Policy JSON").

Import validates the whole document first and reports EVERY problem with its
path (``categories[2].code``); nothing is written unless the document is valid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from policies.models import Category, Policy, PolicyVersion
from policies.validation import (
    ACTIONS,
    MAX_CATEGORIES,
    MAX_DESCRIPTION_CHARS,
    SEVERITIES,
    code_problem,
    duplicate_code_problem,
    examples_problem,
    name_problem,
    slug_problem,
)

FORMAT = "guardsite.policy/v1"
MAX_DOCUMENT_BYTES = 1_000_000
CATEGORY_FIELDS = ("code", "name", "description", "violating_examples", "allowed_examples", "severity", "action")
REQUIRED_CATEGORY_FIELDS = ("code", "name")
# Written by export for people and ignored by import.
INFORMATIONAL_FIELDS = ("version", "change_note", "published_at", "exported_at")
TOP_LEVEL_FIELDS = ("format", "slug", "name", "description", "categories", *INFORMATIONAL_FIELDS)


@dataclass(frozen=True)
class DocumentError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class PolicyDocument:
    name: str
    description: str = ""
    slug: str = ""
    categories: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------- export


def category_dict(category: Category) -> dict[str, Any]:
    return {
        "code": category.code,
        "name": category.name,
        "description": category.description,
        "violating_examples": list(category.violating_examples),
        "allowed_examples": list(category.allowed_examples),
        "severity": category.severity,
        "action": category.action,
    }


def version_document(version: PolicyVersion) -> dict[str, Any]:
    """A version as a Policy JSON document (also the snapshot the diff compares)."""
    return {
        "format": FORMAT,
        "slug": version.policy.slug,
        "name": version.spec_name,
        "description": version.spec_description,
        "version": version.number,  # null: the draft
        "change_note": version.change_note,
        "published_at": version.published_at.isoformat() if version.published_at else None,
        "exported_at": timezone.now().isoformat(),
        "categories": [category_dict(c) for c in version.categories.order_by("position", "id")],
    }


# --------------------------------------------------------------------------- import


def _type_name(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), "a number"
    )


def _check_string(value: object, path: str, errors: list[DocumentError], max_chars: int | None = None) -> str | None:
    if not isinstance(value, str):
        errors.append(DocumentError(path, f"must be a string, got {_type_name(value)}"))
        return None
    if max_chars is not None and len(value) > max_chars:
        errors.append(DocumentError(path, f"at most {max_chars} characters (got {len(value)})"))
    return value


def _check_examples(value: object, path: str, errors: list[DocumentError]) -> list[str]:
    if not isinstance(value, list):
        errors.append(DocumentError(path, f"must be a list of strings, got {_type_name(value)}"))
        return []
    examples: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            errors.append(DocumentError(f"{path}[{index}]", f"must be a string, got {_type_name(item)}"))
        elif not item.strip():
            errors.append(DocumentError(f"{path}[{index}]", "must not be empty"))
        elif "\n" in item.strip():
            errors.append(DocumentError(f"{path}[{index}]", "must be one line (the model reads one example per line)"))
        else:
            examples.append(item.strip())
    problem = examples_problem(examples)
    if problem:
        errors.append(DocumentError(path, problem))
    return examples


def _check_category(raw: object, path: str, seen_codes: list[str], errors: list[DocumentError]) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        errors.append(DocumentError(path, f"must be an object, got {_type_name(raw)}"))
        return None
    for key in raw:
        if key not in CATEGORY_FIELDS:
            errors.append(DocumentError(f"{path}.{key}", f"unknown field (allowed: {', '.join(CATEGORY_FIELDS)})"))
    for key in REQUIRED_CATEGORY_FIELDS:
        if key not in raw:
            errors.append(DocumentError(f"{path}.{key}", "is required"))
    category: dict[str, Any] = {}

    code = _check_string(raw.get("code", ""), f"{path}.code", errors) if "code" in raw else None
    if code is not None:
        code = code.strip()
        problem = code_problem(code) or duplicate_code_problem(code, seen_codes)
        if problem:
            errors.append(DocumentError(f"{path}.code", problem))
        else:
            seen_codes.append(code)
        category["code"] = code

    name = _check_string(raw.get("name", ""), f"{path}.name", errors) if "name" in raw else None
    if name is not None:
        problem = name_problem(name)
        if problem:
            errors.append(DocumentError(f"{path}.name", problem))
        category["name"] = name.strip()

    description = _check_string(raw.get("description", ""), f"{path}.description", errors, MAX_DESCRIPTION_CHARS)
    category["description"] = (description or "").strip()
    for key in ("violating_examples", "allowed_examples"):
        category[key] = _check_examples(raw.get(key, []), f"{path}.{key}", errors)

    for key, choices, default in (("severity", SEVERITIES, "medium"), ("action", ACTIONS, "flag")):
        value = raw.get(key, default)
        if value not in choices:
            shown = json.dumps(value) if isinstance(value, str | int | float | bool) or value is None else _type_name(value)
            errors.append(DocumentError(f"{path}.{key}", f"{shown} is not one of {', '.join(choices)}"))
        category[key] = value
    return category


def parse_document(raw: bytes | str) -> tuple[PolicyDocument | None, list[DocumentError]]:
    """Validate a Policy JSON file. Returns the document, or None and every error found."""
    if isinstance(raw, bytes):
        if len(raw) > MAX_DOCUMENT_BYTES:
            return None, [DocumentError("$", f"file is larger than {MAX_DOCUMENT_BYTES // 1000} kB")]
        try:
            raw = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return None, [DocumentError("$", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, [DocumentError("$", f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")]
    if not isinstance(data, dict):
        return None, [DocumentError("$", f"must be a JSON object, got {_type_name(data)}")]

    errors: list[DocumentError] = []
    for key in data:
        if key not in TOP_LEVEL_FIELDS:
            errors.append(DocumentError(key, f"unknown field (allowed: {', '.join(TOP_LEVEL_FIELDS)})"))
    if "format" in data and data["format"] != FORMAT:
        errors.append(DocumentError("format", f"must be {FORMAT!r}, got {json.dumps(data['format'])}"))

    name = None
    if "name" not in data:
        errors.append(DocumentError("name", "is required"))
    else:
        name = _check_string(data["name"], "name", errors)
        if name is not None and name_problem(name):
            errors.append(DocumentError("name", name_problem(name) or ""))
    description = _check_string(data.get("description", ""), "description", errors, MAX_DESCRIPTION_CHARS) or ""
    slug = _check_string(data.get("slug", ""), "slug", errors) or ""
    if slug and slug_problem(slug):
        errors.append(DocumentError("slug", slug_problem(slug) or ""))

    categories: list[dict[str, Any]] = []
    raw_categories = data.get("categories")
    if raw_categories is None:
        errors.append(DocumentError("categories", "is required (a list of categories)"))
    elif not isinstance(raw_categories, list):
        errors.append(DocumentError("categories", f"must be a list, got {_type_name(raw_categories)}"))
    else:
        if not raw_categories:
            errors.append(DocumentError("categories", "needs at least one category"))
        if len(raw_categories) > MAX_CATEGORIES:
            errors.append(DocumentError("categories", f"at most {MAX_CATEGORIES} categories"))
        seen_codes: list[str] = []
        for index, raw_category in enumerate(raw_categories):
            category = _check_category(raw_category, f"categories[{index}]", seen_codes, errors)
            if category is not None:
                categories.append(category)

    if errors:
        return None, errors
    return PolicyDocument(name=(name or "").strip(), description=description.strip(), slug=slug, categories=categories), []


def _fill_draft(draft: PolicyVersion, document: PolicyDocument) -> None:
    draft.categories.all().delete()
    for position, category in enumerate(document.categories):
        Category.objects.create(version=draft, position=position, **category)
    draft.name, draft.description = document.name, document.description
    draft.save(update_fields=["name", "description"])


@transaction.atomic
def import_as_new_policy(document: PolicyDocument, slug: str, owner: object | None = None) -> Policy:
    """A new policy whose draft is the document (the operator reviews, then publishes)."""
    from guard.serving import current_production

    policy = Policy.objects.create(
        slug=slug,
        name=document.name,
        description=document.description,
        owner=owner if getattr(owner, "pk", None) else None,
        # The production guard, so a promotion later moves this policy along with the others.
        production_model=current_production(),
    )
    _fill_draft(policy.draft(), document)
    return policy


@transaction.atomic
def import_into_draft(policy: Policy, document: PolicyDocument) -> PolicyVersion:
    """Replace the policy's draft with the document; published versions are untouched."""
    draft = policy.draft()
    _fill_draft(draft, document)
    return draft
