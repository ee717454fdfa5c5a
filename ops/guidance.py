"""The overview's "next step": what a newcomer (or a busy operator) should do now,
worked out from the state of the deployment, most basic first.

policy -> publish -> API key -> first item -> worker -> review -> retrain -> promote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.http import HttpRequest
from django.urls import reverse

from guardsite.roles import can_edit_policies, can_review, is_admin

# How many reviewed items make a retrain worth suggesting.
RETRAIN_AFTER_DECISIONS = 20


@dataclass(frozen=True)
class Step:
    key: str  # stable id, for tests and styling
    title: str
    text: str
    url: str = ""
    link: str = ""  # the link's text
    code: str = ""  # a command to copy (the curl example)


def _model(label: str) -> Any:
    return apps.get_model(*label.split("."))


def curl_example(request: HttpRequest, policy_slug: str) -> str:
    body = {"policy": policy_slug, "items": [{"prompt": "How do I pick a lock?", "response": "Here is how..."}]}
    return (
        f"curl -X POST {request.build_absolute_uri('/api/v1/items')} \\\n"
        '  -H "Authorization: Bearer $GUARDSITE_API_KEY" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        '  -H "Idempotency-Key: first-item-1" \\\n'
        f"  -d '{json.dumps(body)}'"
    )


def _setup_steps(request: HttpRequest) -> list[Step]:
    """Steps that come before any traffic: a published policy, a key, a first item."""
    Policy, PolicyVersion = _model("policies.Policy"), _model("policies.PolicyVersion")
    ApiKey, Item = _model("moderation.ApiKey"), _model("moderation.Item")
    user = request.user
    if not Policy.objects.exists():
        text = "A policy says what is not allowed. Start from a preset (general, MLCommons S1–S14, …) and adjust it."
        if not can_edit_policies(user):
            text += " Ask an admin or a policy editor to create one."
        return [Step("create-policy", "Create your first policy", text, "/policies/#create-policy", "Create a policy from a preset")]
    published = PolicyVersion.objects.filter(number__isnull=False)
    if not published.exists():
        draft = Policy.objects.order_by("created_at").first()
        return [Step("publish-policy", "Publish your policy", f"{draft.name} is still a draft; the API judges against published versions only.",
                     reverse("policies:editor", kwargs={"slug": draft.slug}) + "#publish", "Open the draft and publish version 1")]
    if not ApiKey.objects.filter(revoked_at__isnull=True).exists():
        text = "Your app sends prompts and responses to the API with a key."
        if not is_admin(user):
            text += " Only admins create keys: ask one."
        return [Step("create-key", "Create an API key", text, "/api-keys/", "Create an API key")]
    if not Item.objects.exists():
        slug = published.select_related("policy").order_by("-published_at").first().policy.slug
        return [Step("send-item", "Send your first item",
                     "Send a prompt (and the AI's response) from your app; the guard judges it against your policy and flagged items go to review.",
                     "/api/v1/docs", "API reference", code=curl_example(request, slug))]
    return []


def _running_steps(request: HttpRequest, workers_online: int, pending: int) -> list[Step]:
    """Steps once traffic flows: workers, review, retraining, promotion."""
    ReviewTask, Decision = _model("moderation.ReviewTask"), _model("moderation.Decision")
    TrainingJob, ModelVersion = _model("trainer.TrainingJob"), _model("guard.ModelVersion")
    steps = []
    if pending and not workers_online:
        steps.append(Step("start-worker", "Start a worker", f"{pending} item{'s' if pending != 1 else ''} wait for the guard and no worker is online.",
                          "#workers", "Workers and queues", code="celery -A guardsite worker -Q default,gpu-infer,gpu-train"))
    # Items, not review tasks: an item waiting for a second review too is one item.
    waiting = ReviewTask.objects.filter(state__in=[ReviewTask.State.OPEN, ReviewTask.State.CLAIMED]).values("item_id").distinct().count()
    if waiting and can_review(request.user):
        steps.append(Step("review", "Review flagged items", f"{waiting} item{'s' if waiting != 1 else ''} wait{'' if waiting != 1 else 's'} for a reviewer's decision.",
                          reverse("moderation:review-queue"), "Open the review queue"))
    decisions = Decision.objects.count()
    if decisions >= RETRAIN_AFTER_DECISIONS and not TrainingJob.objects.exists() and can_edit_policies(request.user):
        steps.append(Step("retrain", "Retrain the guard", f"{decisions} reviewed items can teach the guard your policy.",
                          "/training/new", "Start a training job"))
    production = ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).order_by("-promoted_at").first()
    newer = ModelVersion.objects.filter(status=ModelVersion.Status.CANDIDATE)
    if production is not None:
        newer = newer.filter(created_at__gt=production.created_at)
    candidate = newer.order_by("-created_at").first()
    if candidate is not None:
        steps.append(Step("promote", "Compare and promote the new guard",
                          f"{candidate.name} is a candidate: compare it with production on the evaluation, then promote it.",
                          reverse("registry:model", kwargs={"name": candidate.name}), f"Open {candidate.name}"))
    return steps


def next_steps(request: HttpRequest, workers_online: int = 0, pending: int = 0) -> list[Step]:
    """What to do next, most basic first: the first missing setup step, then what the traffic asks for
    (the demo has items to review before the operator has created a key)."""
    return _setup_steps(request) + _running_steps(request, workers_online, pending)
