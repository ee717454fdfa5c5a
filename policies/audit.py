"""What the policy pages write to the audit log: a policy's creation and each edit of its draft.

Publishing and rollbacks need no entry here: the audit reads them from the published
versions themselves (``policy.publish`` / ``policy.rollback``, ops/audit.py).
"""

from __future__ import annotations

from typing import Any

from policies.models import Category, Policy

DRAFT_EDIT = "policy.draft_edit"
# What an edit entry shows of a category (examples as counts: the entry stays readable).
CATEGORY_FIELDS = ("code", "name", "description", "severity", "action")


def _record(user: object, action: str, policy: Policy, before: dict | None = None, after: dict | None = None) -> None:
    from moderation.models import AuditLog

    AuditLog.record(user, action, policy, before=before, after=after)


def category_state(category: Category) -> dict[str, Any]:
    state: dict[str, Any] = {name: getattr(category, name) for name in CATEGORY_FIELDS}
    state["violating examples"] = len(category.violating_examples or [])
    state["allowed examples"] = len(category.allowed_examples or [])
    return state


def created(user: object, policy: Policy, how: str) -> None:
    """``how``: "preset general", "blank", "imported from a file"."""
    draft = policy.draft()
    _record(user, "policy.create", policy, after={
        "slug": policy.slug, "name": policy.name, "from": how, "categories": list(draft.categories.values_list("code", flat=True)),
    })


def draft_edited(user: object, policy: Policy, change: str, before: dict | None = None, after: dict | None = None) -> None:
    """One edit of the draft; ``change`` says what in words ("category S9 added"), before/after what it changed."""
    if before is not None and after is not None:
        # Only what changed, with the code to say which category.
        keep = {k for k in after if before.get(k) != after.get(k)}
        keep |= {"code"} & set(after)
        before = {k: v for k, v in before.items() if k in keep}
        after = {k: v for k, v in after.items() if k in keep}
    _record(user, DRAFT_EDIT, policy, before=before, after={"change": change, **(after or {})})
