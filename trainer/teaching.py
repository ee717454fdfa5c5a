"""Teach a policy's categories from reviewers' decisions, in seconds, on a CPU.

Every reviewed item of a policy says something about its categories: a code the reviewer
kept or added makes the judged text a violating example of that category; a code the guard
named and the reviewer removed (or an item the reviewer called safe) makes it a near miss,
an "allowed" example. ``teach`` writes them as the policy's next ``CategoryTeaching``
snapshot; the latent heads refit each taught category from its examples when they next see
the policy (``guard.zero_shot.example_head``: milliseconds), so nothing queues and no GPU waits.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db import transaction

from guard.backends.base import GuardRequest
from guard.contract import PolicySpec
from policies.models import CategoryTeaching, Policy

MAX_PER_CODE = 32  # newest first: a category's examples stay a handful, the refit stays instant


def examples_from_reviews(policy: Policy) -> tuple[dict[str, dict[str, list[str]]], int]:
    """``({code: {"violating": [...], "allowed": [...]}}, reviewed items read)``, newest decisions first."""
    from moderation.models import Decision

    codes = set()
    latest = policy.latest_version()
    if latest is not None:
        codes = {c.code for c in latest.categories.all()}
    examples: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"violating": [], "allowed": []})
    seen: set[int] = set()
    decisions = (
        Decision.objects.filter(item__policy_version__policy=policy)
        .select_related("item", "item__verdict")
        .order_by("-created_at", "-pk")
    )
    for decision in decisions.iterator(chunk_size=500):
        if decision.item_id in seen:
            continue  # an item's latest decision stands
        seen.add(decision.item_id)
        item = decision.item
        text = item.judged_text
        kept = [c for c in decision.categories if c in codes]
        verdict = getattr(item, "verdict", None)
        named = [c for c in (verdict.categories if verdict is not None else []) if c in codes]
        for code in kept:
            if len(examples[code]["violating"]) < MAX_PER_CODE and text not in examples[code]["violating"]:
                examples[code]["violating"].append(text)
        for code in named:
            if code not in kept and len(examples[code]["allowed"]) < MAX_PER_CODE and text not in examples[code]["allowed"]:
                examples[code]["allowed"].append(text)
    return {code: dict(v) for code, v in examples.items() if v["violating"] or v["allowed"]}, len(seen)


@transaction.atomic
def teach(policy: Policy, user: Any = None) -> CategoryTeaching:
    """The policy's next teaching snapshot, from every reviewer decision so far."""
    examples, reviewed = examples_from_reviews(policy)
    last = Policy.objects.select_for_update().get(pk=policy.pk).teachings.order_by("-number").first()
    return CategoryTeaching.objects.create(
        policy=policy, number=(last.number + 1) if last else 1, based_on=policy.latest_version(), examples=examples,
        reviewed_items=reviewed, created_by=user if getattr(user, "is_authenticated", False) else None,
    )


def _without_teaching(spec: PolicySpec) -> PolicySpec:
    from dataclasses import replace

    return replace(spec, categories=tuple(replace(c, taught_violating=(), taught_allowed=()) for c in spec.categories))


def scores_before_after(policy: Policy, teaching: CategoryTeaching, limit: int = 12) -> list[dict[str, Any]]:
    """Per taught text: every category's score without and with the teaching (the model's heads)."""
    from guard import runtime

    version = policy.latest_version()
    if version is None or not teaching.examples:
        return []
    after = version.to_spec()
    before = _without_teaching(after)
    texts: list[tuple[str, str, str]] = []
    for code, lists in sorted(teaching.examples.items()):
        for kind in ("violating", "allowed"):
            for text in lists.get(kind, [])[:2]:
                texts.append((code, kind, text))
    texts = texts[:limit]
    model = policy.production_model.name if policy.production_model else None
    requests = [GuardRequest(spec, text) for spec in (before, after) for _, _, text in texts]
    verdicts = runtime.classify(requests, model)
    rows = []
    for index, (code, kind, text) in enumerate(texts):
        old, new = verdicts[index], verdicts[len(texts) + index]
        rows.append({
            "code": code, "kind": kind, "text": text,
            "before": old.probabilities.get("categories", {}).get(code), "after": new.probabilities.get("categories", {}).get(code),
            "label_before": old.prompt_label, "label_after": new.prompt_label, "decided_by": new.decided_by,
        })
    return rows
