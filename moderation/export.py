"""Reviewed items as training examples, in the shared JSONL schema.

The trainer reads ``reviewed_records()``; each record is one item with the
labels of its latest human decision (a later decision, e.g. an adjudication
after a double review, supersedes an earlier one).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from moderation.models import Decision, Item


def reviewed_records(policy_slug: str | None = None) -> Iterator[dict[str, Any]]:
    """One record per reviewed item: id, source="review", prompt, response, prompt_label,
    response_label, refusal_label, categories (policy codes), taxonomy="policy:<slug>@<n>",
    plus policy_version_id."""
    items = Item.objects.filter(decisions__isnull=False).distinct().select_related("policy_version__policy").order_by("pk")
    if policy_slug:
        items = items.filter(policy_version__policy__slug=policy_slug)
    last_pk = 0
    while True:
        chunk = list(items.filter(pk__gt=last_pk)[:500])
        if not chunk:
            return
        last_pk = chunk[-1].pk
        latest: dict[int, Decision] = {}
        for decision in Decision.objects.filter(item__in=chunk).order_by("created_at", "pk"):
            latest[decision.item_id] = decision
        for item in chunk:
            decision = latest[item.pk]
            version = item.policy_version
            has_response = item.has_response
            yield {
                "id": f"review-{item.pk}",
                "source": "review",
                "prompt": item.prompt,
                "response": item.response if has_response else None,
                "prompt_label": decision.prompt_label,
                "response_label": decision.response_label if has_response else None,
                "refusal_label": decision.refusal_label if has_response else None,
                "categories": list(decision.categories),
                "taxonomy": f"policy:{version.policy.slug}@{version.number}",
                "policy_version_id": version.pk,
            }
