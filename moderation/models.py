"""Moderation: API clients, items, their (one) verdict, and the human review trail."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


def _default_rate_limit() -> int:
    return int(settings.MODERATION_RATE_LIMIT_PER_MINUTE)


class ApiKey(models.Model):
    """A client of the API. Only a SHA-256 of the secret is stored; the secret is shown once."""

    name = models.CharField(max_length=120)
    # Public, unique part of the key ("gsk_<prefix>_<secret>"): finds the row without the secret.
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    rate_limit_per_minute = models.PositiveIntegerField(default=_default_rate_limit)
    webhook_url = models.URLField(max_length=500, blank=True, default="")
    webhook_secret = models.CharField(max_length=128, blank=True, default="")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class IdempotencyRecord(models.Model):
    """The answer given to a batch submitted with an ``Idempotency-Key``: a replay gets it again."""

    client = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="idempotency_records")
    key = models.CharField(max_length=200)
    request_sha256 = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(default=202)
    response = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["client", "key"], name="one_answer_per_idempotency_key")]


class RateCounter(models.Model):
    """Requests of one key in one minute; used when no Redis is configured (embedded setup)."""

    key_prefix = models.CharField(max_length=16)
    minute = models.BigIntegerField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["key_prefix", "minute"], name="one_counter_per_key_minute")]


class Item(models.Model):
    class Status(models.TextChoices):
        RECEIVED = "received"  # committed, not yet announced to the workers
        QUEUED = "queued"  # announced; waiting for a worker
        RUNNING = "running"  # claimed by a worker under a lease
        DONE = "done"  # has its verdict
        FAILED = "failed"  # gave up after MODERATION_MAX_ATTEMPTS deliveries; see last_error

    class Mode(models.TextChoices):
        FAST = "fast"
        REASON = "reason"

    class Origin(models.TextChoices):
        SYNC = "moderate", "POST /api/v1/moderate"
        ASYNC = "items", "POST /api/v1/items"

    PENDING = (Status.RECEIVED, Status.QUEUED)

    policy_version = models.ForeignKey("policies.PolicyVersion", on_delete=models.PROTECT, related_name="items")
    prompt = models.TextField()
    response = models.TextField(null=True, blank=True)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.FAST)
    origin = models.CharField(max_length=10, choices=Origin.choices, default=Origin.ASYNC)
    external_id = models.CharField(max_length=200, blank=True, default="")
    client = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="items")
    idempotency_key = models.CharField(max_length=200, blank=True, default="")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    # Dispatch bookkeeping: how many times a worker claimed it, which task holds it, until when.
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_by_task = models.CharField(max_length=64, blank=True, default="")
    leased_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["status", "id"], name="item_status_id"),
            models.Index(fields=["client", "updated_at"], name="item_client_updated"),
            models.Index(fields=["policy_version", "created_at"], name="item_version_created"),
        ]

    def __str__(self) -> str:
        return f"item {self.pk} ({self.status})"

    @property
    def has_response(self) -> bool:
        return bool(self.response and self.response.strip())

    @property
    def judged_text(self) -> str:
        """What the verdict is about: the response where there is one, else the prompt."""
        return self.response if self.has_response else self.prompt  # type: ignore[return-value]

    def latest_decision(self) -> Decision | None:
        """The newest human decision (reads ``decisions``, prefetched or not); None when nobody reviewed it."""
        decisions = list(self.decisions.all())
        return max(decisions, key=lambda d: (d.created_at, d.pk)) if decisions else None


class Verdict(models.Model):
    class Action(models.TextChoices):
        BLOCK = "block"
        FLAG = "flag"
        ALLOW = "allow"

    class ExplanationStatus(models.TextChoices):
        NONE = "", "none asked"
        PENDING = "pending", "being written"
        DONE = "done", "written"
        FAILED = "failed", "could not be written"

    # One-to-one: the database, not the code, guarantees "exactly one verdict per item",
    # so a re-delivered batch can never store a second one.
    item = models.OneToOneField(Item, on_delete=models.CASCADE, related_name="verdict")
    prompt_label = models.CharField(max_length=10)
    response_label = models.CharField(max_length=10, null=True, blank=True)
    refusal_label = models.CharField(max_length=12, null=True, blank=True)
    categories = models.JSONField(default=list, blank=True)
    explanation = models.TextField(blank=True, default="")
    confidence = models.FloatField(null=True, blank=True)
    probabilities = models.JSONField(default=dict, blank=True)
    # The calibrated decision thresholds the labels were chosen under ({"prompt": 0.757, ...});
    # a field without one took its most probable label.
    thresholds = models.JSONField(default=dict, blank=True)
    model_label = models.CharField(max_length=200, default="embedded")
    mode = models.CharField(max_length=8, default="fast")
    # What decided the labels: "heads" (the model's latent heads), "logits" (its label logits:
    # a model without heads), "generation" (a served model's generated answer).
    decided_by = models.CharField(max_length=12, default="logits")
    # This item's share of its micro-batch's guard time (by length), the batch's size and whole time.
    latency_ms = models.PositiveIntegerField(default=0)
    batch_size = models.PositiveIntegerField(default=1)
    batch_ms = models.PositiveIntegerField(default=0)
    truncated = models.BooleanField(default=False)
    # The stretch of a long prompt in which the latent heads' peak head found a harmful request (empty otherwise).
    evidence = models.TextField(blank=True, default="")
    # The stretch of a long response in which the response peak head found harmful content (empty otherwise).
    response_evidence = models.TextField(blank=True, default="")
    parse_error = models.TextField(null=True, blank=True)
    raw_output = models.TextField(blank=True, default="")
    action = models.CharField(max_length=8, choices=Action.choices)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The explanation of a fast verdict is written afterwards by a reason pass
    # (moderation.explain), when the policy asks for one for this action.
    explanation_status = models.CharField(max_length=10, choices=ExplanationStatus.choices, default=ExplanationStatus.NONE, blank=True)
    explanation_attempts = models.PositiveSmallIntegerField(default=0)
    explanation_leased_until = models.DateTimeField(null=True, blank=True)
    explanation_error = models.TextField(blank=True, default="")
    explained_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["explanation_status", "id"], name="verdict_explanation_status")]

    def __str__(self) -> str:
        return f"verdict for item {self.item_id}: {self.action}"

    @property
    def is_unsafe(self) -> bool:
        return "unsafe" in (self.prompt_label, self.response_label)


class ReviewTask(models.Model):
    class Reason(models.TextChoices):
        FLAG = "flag", "flagged by policy"
        UNCERTAIN = "uncertain", "guard uncertain"
        QC_SAMPLE = "qc_sample", "quality-control sample"
        DOUBLE = "double", "second review"
        PARTLY_READ = "partial", "guard read part of the text"

    class State(models.TextChoices):
        OPEN = "open"
        CLAIMED = "claimed"
        DONE = "done"

    # Lower is served first.
    PRIORITY = {Reason.FLAG: 0, Reason.UNCERTAIN: 1, Reason.PARTLY_READ: 1, Reason.DOUBLE: 2, Reason.QC_SAMPLE: 3}

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="review_tasks")
    reason = models.CharField(max_length=10, choices=Reason.choices)
    priority = models.PositiveSmallIntegerField(default=0)
    state = models.CharField(max_length=8, choices=State.choices, default=State.OPEN)
    claimed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="review_claims")
    claimed_at = models.DateTimeField(null=True, blank=True)
    claim_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    # The text the review is about (the one the guard found unsafe, else the one nearest its
    # threshold) and its P(unsafe): what the queue shows, sorts and filters as the guard's score.
    field = models.CharField(max_length=10, blank=True, default="")
    score = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["priority", "id"]
        constraints = [models.UniqueConstraint(fields=["item", "reason"], name="one_review_task_per_reason")]
        indexes = [models.Index(fields=["state", "priority", "id"], name="review_queue_order")]

    def __str__(self) -> str:
        return f"review of item {self.item_id} ({self.reason}, {self.state})"


class Decision(models.Model):
    class Outcome(models.TextChoices):
        AGREE = "agree"
        OVERRIDE = "override"

    task = models.OneToOneField(ReviewTask, on_delete=models.CASCADE, related_name="decision")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="decisions")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="review_decisions")
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    # The final labels (a copy of the guard's on "agree"), so training and agreement read one place.
    prompt_label = models.CharField(max_length=10)
    response_label = models.CharField(max_length=10, null=True, blank=True)
    refusal_label = models.CharField(max_length=12, null=True, blank=True)
    # All the violated codes (training and agreement read these), and which text each was chosen for.
    categories = models.JSONField(default=list, blank=True)
    prompt_categories = models.JSONField(default=list, blank=True)
    response_categories = models.JSONField(default=list, blank=True)
    note = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.outcome} by {self.reviewer_id} on item {self.item_id}"


class AuditLog(models.Model):
    """Who did what to which object, and what it looked like before and after."""

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_label = models.CharField(max_length=200, blank=True, default="")
    action = models.CharField(max_length=60)
    object_type = models.CharField(max_length=60)
    object_id = models.CharField(max_length=60)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_label} {self.action} {self.object_type}:{self.object_id}"

    @property
    def rows(self) -> list[tuple[str, str, str, bool]]:
        """(key, before, after, changed) as display text (moderation/audit_values.py)."""
        from moderation.audit_values import rows

        return rows(self.before, self.after)

    @classmethod
    def record(
        cls,
        actor: object | None,
        action: str,
        obj: models.Model,
        before: dict | None = None,
        after: dict | None = None,
    ) -> AuditLog:
        user = actor if getattr(actor, "pk", None) else None
        label = user.get_username() if user is not None else str(actor or "system")  # type: ignore[union-attr]
        return cls.objects.create(
            actor=user,
            actor_label=label,
            action=action,
            object_type=obj._meta.model_name or type(obj).__name__.lower(),
            object_id=str(obj.pk),
            before=before,
            after=after,
        )


class WebhookDelivery(models.Model):
    """One event sent (or to be sent) to a client's webhook, with its attempts: the history Stripe and GitHub show.

    The payload is fixed at the first attempt, so retries and redeliveries send what
    the first attempt sent; ``event_id`` (the ``X-Guardsite-Delivery`` header) is shared
    by a delivery and its redeliveries, so a client can drop duplicates.
    """

    class Status(models.TextChoices):
        PENDING = "pending"  # queued, or waiting for its next retry
        SUCCEEDED = "succeeded"  # a 2xx answer
        FAILED = "failed"  # retries exhausted
        SKIPPED = "skipped"  # the key was revoked or lost its webhook URL before sending

    client = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="webhook_deliveries")
    item = models.ForeignKey(Item, null=True, blank=True, on_delete=models.SET_NULL, related_name="webhook_deliveries")
    event = models.CharField(max_length=40)
    event_id = models.UUIDField(default=uuid.uuid4, editable=False)
    url = models.URLField(max_length=500)
    payload = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    redelivery_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="redeliveries")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["client", "-created_at"], name="webhook_delivery_by_client")]

    def __str__(self) -> str:
        return f"{self.event} #{self.pk} to {self.client_id} ({self.status})"

    @property
    def last_attempt(self) -> WebhookAttempt | None:
        attempts = list(self.attempts.all())
        return attempts[-1] if attempts else None


class WebhookAttempt(models.Model):
    """One POST of a delivery: when, how long, what the endpoint answered (or why nothing came back)."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)  # None: no answer (network error, timeout)
    error = models.CharField(max_length=500, blank=True, default="")
    response_excerpt = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="one_attempt_per_number")]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}: {self.status_code or self.error}"

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class DraftReplay(models.Model):
    """A policy's draft tried on its recent traffic before publishing (``moderation.replay``): the newest
    items judged again under the live version and under the draft (a snapshot taken when the replay
    was asked for), by the model that serves the policy. Nothing is stored on the items."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    policy = models.ForeignKey("policies.Policy", on_delete=models.CASCADE, related_name="replays")
    live_version = models.ForeignKey("policies.PolicyVersion", null=True, on_delete=models.SET_NULL, related_name="+")
    draft_spec = models.TextField()  # ``guard.spec_json.spec_to_json`` of the draft when asked
    sample = models.PositiveIntegerField()  # the newest items asked for
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    report = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"replay #{self.pk} of {self.policy_id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0
