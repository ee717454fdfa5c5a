"""Fixtures of the ops tests: a published policy and a factory of items with verdicts,
review tasks and decisions at chosen moments (the overview aggregates over time)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from moderation.models import Decision, Item, ReviewTask, Verdict
from policies.models import Category, Policy, PolicyVersion


def publish_policy(slug: str, codes: dict[str, str] | None = None, name: str | None = None) -> PolicyVersion:
    """Publish a policy whose categories map code -> action (default S1 block, S2 flag)."""
    policy = Policy.objects.create(slug=slug, name=name or f"{slug} policy")
    draft = policy.draft()
    for position, (code, action) in enumerate((codes or {"S1": "block", "S2": "flag"}).items()):
        Category.objects.create(version=draft, position=position, code=code, name=f"Category {code}", description=f"What {code} forbids.", action=action)
    return policy.publish(change_note="first")


@pytest.fixture
def house_policy(db) -> PolicyVersion:
    return publish_policy("house")


@pytest.fixture
def judged(house_policy) -> Callable[..., Item]:
    """``judged(at, categories=("S2",), model="embedded", review=None, decision=None, reviewer=None)``:
    an item created at ``at`` with its verdict; ``review`` opens a review task of that reason;
    ``decision`` ("agree"/"override") closes it by ``reviewer`` at ``at``."""

    def make(
        at: datetime | None = None,
        categories: tuple[str, ...] = ("S2",),
        model: str = "embedded",
        review: str | None = None,
        decision: str | None = None,
        reviewer: object | None = None,
        version: PolicyVersion | None = None,
        prompt: str = "How do I pick a lock?",
    ) -> Item:
        at = at or timezone.now()
        unsafe = bool(categories)
        item = Item.objects.create(
            policy_version=version or house_policy, prompt=prompt, status=Item.Status.DONE, attempts=1, created_at=at, updated_at=at
        )
        Verdict.objects.create(
            item=item,
            prompt_label="unsafe" if unsafe else "safe",
            categories=list(categories),
            explanation="test verdict",
            confidence=0.9,
            model_label=model,
            action="flag" if unsafe else "allow",
            created_at=at,
        )
        if review or decision:
            task = ReviewTask.objects.create(item=item, reason=review or "flag", created_at=at)
            if decision:
                assert reviewer is not None, "a decision needs a reviewer"
                ReviewTask.objects.filter(pk=task.pk).update(state="done", completed_at=at)
                Decision.objects.create(
                    task=task, item=item, reviewer=reviewer, outcome=decision,
                    prompt_label="safe" if decision == "override" else ("unsafe" if unsafe else "safe"),
                    categories=[] if decision == "override" else list(categories), created_at=at,
                )
        return item

    return make


def hours_ago(hours: float) -> datetime:
    return timezone.now() - timedelta(hours=hours)
