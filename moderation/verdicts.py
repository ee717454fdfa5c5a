"""From a guard verdict to a stored Verdict, a decided action and (maybe) a review task."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from guard import contract
from moderation.models import Item, Verdict
from moderation.review_budget import enroll_for_review

ACTION_RANK = {Verdict.Action.ALLOW: 0, Verdict.Action.FLAG: 1, Verdict.Action.BLOCK: 2}


def category_actions(policy_version: object) -> dict[str, str]:
    """Category code -> action of a policy version."""
    return {code: action for code, action in policy_version.categories.values_list("code", "action")}  # type: ignore[attr-defined]


def decided_action(is_unsafe: bool, categories: Iterable[str], actions: dict[str, str]) -> str:
    """The strictest action of the predicted categories (block > flag > allow).

    Safe -> allow. Unsafe without categories (or with a code the policy does not
    have) -> flag: a human decides what the guard could not attribute.
    """
    if not is_unsafe:
        return Verdict.Action.ALLOW
    codes = list(categories)
    if not codes:
        return Verdict.Action.FLAG
    chosen = Verdict.Action.ALLOW
    for code in codes:
        action = actions.get(code, Verdict.Action.FLAG)
        if ACTION_RANK.get(action, 1) > ACTION_RANK[chosen]:
            chosen = action
    return chosen


@dataclass(frozen=True)
class Timing:
    """How long the guard took: this item's share, its micro-batch's size and whole time."""

    latency_ms: int
    batch_size: int = 1
    batch_ms: int | None = None


def explanation_status(item: Item, result: contract.Verdict, action: str) -> str:
    """PENDING when the policy wants an explanation the guard did not write (fast mode)."""
    if result.explanation or result.parse_error is not None:
        return Verdict.ExplanationStatus.NONE
    policy = item.policy_version.policy  # type: ignore[attr-defined]
    return Verdict.ExplanationStatus.PENDING if policy.explains(action) else Verdict.ExplanationStatus.NONE


def verdict_fields(
    result: contract.Verdict,
    actions: dict[str, str],
    model_label: str,
    latency_ms: int,
    timing: Timing | None = None,
    thresholds: dict[str, float] | None = None,
) -> dict:
    timing = timing or Timing(latency_ms=latency_ms)
    return {
        "prompt_label": result.prompt_label,
        "response_label": result.response_label,
        "refusal_label": result.refusal_label,
        "categories": list(result.categories),
        "explanation": result.explanation,
        "confidence": result.confidence,
        "probabilities": result.probabilities or {},
        "thresholds": dict(thresholds or {}),
        "model_label": model_label[:200],
        "mode": result.mode,
        "decided_by": result.decided_by,
        "latency_ms": max(0, int(timing.latency_ms)),
        "batch_size": max(1, int(timing.batch_size)),
        "batch_ms": max(0, int(timing.latency_ms if timing.batch_ms is None else timing.batch_ms)),
        "truncated": bool(result.truncated),
        "evidence": result.evidence,
        "response_evidence": result.response_evidence,
        "parse_error": result.parse_error,
        "raw_output": result.raw_output or "",
        "action": decided_action(result.is_unsafe, result.categories, actions),
    }


def store_verdict(
    item: Item,
    result: contract.Verdict,
    actions: dict[str, str],
    model_label: str,
    latency_ms: int,
    *,
    timing: Timing | None = None,
    thresholds: dict[str, float] | None = None,
) -> tuple[Verdict, bool]:
    """Store the item's verdict unless it already has one; returns (verdict, created).

    Safe against re-delivery: the one-to-one constraint refuses a second verdict
    and the existing one is returned. Marks the item done and enrolls it for
    review; a webhook is announced after commit. A fast verdict the policy wants
    explained is stored with ``explanation_status`` pending: the caller wakes the
    reason pass (``moderation.explain.announce``) once the answer is out.
    """
    from moderation import webhooks

    now = timezone.now()
    fields = verdict_fields(result, actions, model_label, latency_ms, timing, thresholds)
    fields["explanation_status"] = explanation_status(item, result, fields["action"])
    try:
        with transaction.atomic():
            verdict = Verdict.objects.create(item=item, created_at=now, **fields)
            enroll_for_review(verdict)
    except IntegrityError:
        verdict = Verdict.objects.get(item=item)
        created = False
    else:
        created = True
    Item.objects.filter(pk=item.pk).exclude(status=Item.Status.DONE).update(
        status=Item.Status.DONE, leased_until=None, updated_at=now, last_error=""
    )
    if created:
        webhooks.announce(item, "verdict")
    return verdict, created
