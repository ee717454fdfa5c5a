"""The JSON shape of items, verdicts and human decisions (API answers and webhooks)."""

from __future__ import annotations

from typing import Any

from moderation.models import Decision, Item, Verdict


def policy_label(item: Item) -> str:
    version = item.policy_version
    return f"{version.policy.slug}@{version.number}"


def verdict_json(item: Item, verdict: Verdict) -> dict[str, Any]:
    return {
        "id": item.pk,
        "prompt_label": verdict.prompt_label,
        "response_label": verdict.response_label,
        "refusal_label": verdict.refusal_label,
        "categories": list(verdict.categories),
        "explanation": verdict.explanation,
        "explanation_status": verdict.explanation_status or "none",
        "confidence": verdict.confidence,
        "probabilities": verdict.probabilities or {},
        "thresholds": verdict.thresholds or {},
        "model": verdict.model_label,
        "policy_version": policy_label(item),
        "latency_ms": verdict.latency_ms,
        "batch_size": verdict.batch_size,
        "batch_ms": verdict.batch_ms,
        "mode": verdict.mode,
        "decided_by": verdict.decided_by,
        "truncated": verdict.truncated,
        "evidence": verdict.evidence,
        "response_evidence": verdict.response_evidence,
        "parse_error": verdict.parse_error,
        "action": verdict.action,
    }


def decision_json(decision: Decision) -> dict[str, Any]:
    return {
        "outcome": decision.outcome,
        "prompt_label": decision.prompt_label,
        "response_label": decision.response_label,
        "refusal_label": decision.refusal_label,
        "categories": list(decision.categories),
        "decided_at": decision.created_at.isoformat(),
    }


def item_json(item: Item) -> dict[str, Any]:
    verdict = getattr(item, "verdict", None) if _has_verdict(item) else None
    latest = item.latest_decision()
    return {
        "id": item.pk,
        "external_id": item.external_id or None,
        "status": item.status,
        "policy_version": policy_label(item),
        "mode": item.mode,
        "created_at": item.created_at.isoformat(),
        "updated_at": item.updated_at.isoformat(),
        "attempts": item.attempts,
        "error": item.last_error or None,
        "verdict": verdict_json(item, verdict) if verdict else None,
        "human_decision": decision_json(latest) if latest else None,
    }


def _has_verdict(item: Item) -> bool:
    try:
        item.verdict  # noqa: B018 - the reverse one-to-one raises when absent
    except Verdict.DoesNotExist:
        return False
    return True
