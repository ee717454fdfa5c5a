"""Request and response schemas of the moderation API (``moderation.api``): what the
OpenAPI document describes, field by field."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ninja import Field, Schema
from pydantic import ConfigDict

ModeName = Literal["fast", "reason"]
StatusName = Literal["received", "queued", "running", "done", "failed"]


class ModerateIn(Schema):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="The user's prompt (required, non-empty).")
    response: str | None = Field(None, description="The AI response, if any.")
    policy: str = Field(description='Policy "slug" (latest published version) or "slug@version".')
    mode: ModeName = Field("fast", description="fast: labels from the logits; reason: generated explanation.")


class BatchItemIn(Schema):
    model_config = ConfigDict(extra="forbid")

    prompt: str
    response: str | None = None
    external_id: str | None = Field(None, description="Your id for this item (echoed back).")
    policy: str | None = Field(None, description="Overrides the batch's policy for this item.")
    mode: ModeName | None = Field(None, description="Overrides the batch's mode for this item.")


class BatchIn(Schema):
    model_config = ConfigDict(extra="forbid")

    policy: str | None = Field(None, description='Default policy of the items: "slug" or "slug@version".')
    mode: ModeName = "fast"
    items: list[BatchItemIn]


class ErrorOut(Schema):
    error: str
    detail: str


class VerdictOut(Schema):
    id: int
    prompt_label: str
    response_label: str | None
    refusal_label: str | None
    categories: list[str]
    explanation: str
    explanation_status: Literal["none", "pending", "done", "failed"] = Field(
        description="pending: a fast verdict's explanation is being written by a reason pass (the policy asks for one); "
        "poll GET /items/{id} for it. none: no explanation was asked for."
    )
    confidence: float | None
    probabilities: dict[str, dict[str, float]] = Field(description="Per answer field, the probability of each label.")
    thresholds: dict[str, float] = Field(
        description="Calibrated decision thresholds the labels were chosen under: a field's positive label "
        "(unsafe, refusal) is chosen when its probability reaches the threshold; fields without one take the most probable label."
    )
    model: str
    policy_version: str
    latency_ms: int = Field(description="This item's share of its micro-batch's guard time, in milliseconds.")
    batch_size: int = Field(description="How many items the guard judged together with this one (1 for /moderate).")
    batch_ms: int = Field(description="The whole micro-batch's guard time, in milliseconds.")
    mode: str
    decided_by: str = Field(
        description="heads: the model's latent heads on its hidden states decided the labels; logits: its label "
        "logits (a model without heads); generation: a served model's generated answer."
    )
    truncated: bool = Field(
        description="The guard read only part of the text: the latent heads read a prompt's or response's first and "
        "last 96 tokens (their peak heads also read a prompt or response of up to 2,048 tokens whole, for harm hidden "
        "in it: see evidence, response_evidence); a label-logit or generated verdict reads up to GUARD_MAX_INPUT_TOKENS (head and tail kept)."
    )
    evidence: str = Field(
        description="Where one stretch of the text decided, that stretch: the part of a long prompt (read whole, up to "
        "2,048 tokens, by the latent heads' peak head) in which a harmful request was found. Empty otherwise."
    )
    response_evidence: str = Field(
        description="The same for the response: the part of a response longer than the features read (over 192 "
        "tokens; read whole, up to 2,048, by the response peak head) in which harmful content was found. Empty otherwise."
    )
    parse_error: str | None
    action: Literal["block", "flag", "allow"]


class AcceptedItemOut(Schema):
    id: int
    external_id: str | None


class BatchOut(Schema):
    count: int
    ids: list[int]
    items: list[AcceptedItemOut]
    status: Literal["queued"]


class DecisionOut(Schema):
    outcome: str
    prompt_label: str
    response_label: str | None
    refusal_label: str | None
    categories: list[str]
    decided_at: str


class ItemOut(Schema):
    id: int
    external_id: str | None
    status: StatusName
    policy_version: str
    mode: str
    created_at: str
    updated_at: str
    attempts: int
    error: str | None
    verdict: VerdictOut | None
    human_decision: DecisionOut | None


class ItemListOut(Schema):
    count: int
    items: list[ItemOut]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= to get the next page; null on the last page.")


class ItemFilters(Schema):
    status: StatusName | None = None
    since: datetime | None = Field(None, description="Only items created or updated at or after this time (ISO 8601).")
    cursor: str | None = None
    limit: int = Field(100, ge=1, le=1000)


ERRORS: dict[int, type[Schema]] = {400: ErrorOut, 401: ErrorOut, 404: ErrorOut, 409: ErrorOut, 413: ErrorOut, 422: ErrorOut, 429: ErrorOut, 503: ErrorOut}
