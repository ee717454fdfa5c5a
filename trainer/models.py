"""Training jobs and the model registry's promotion history."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

# A cancelling job that has written no progress for this long lost its worker
# (a message that was never re-delivered): a second cancel ends it at once.
STALE_AFTER_SECONDS = 15 * 60


class TrainingJob(models.Model):
    """One training run: recipe + data + base model -> a candidate ModelVersion.

    The Celery task ``trainer.tasks.run_training_job`` drives it; every step it
    writes ``step``/``metrics`` here and reads ``status`` (a cancel request).
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        CANCELLING = "cancelling"
        CANCELLED = "cancelled"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    class Stage(models.TextChoices):
        WAITING = "waiting"
        DATA = "data", "building data"
        TRAINING = "training"
        EVALUATING = "evaluating"
        REGISTERING = "registering"
        DONE = "done"

    ACTIVE = (Status.QUEUED, Status.RUNNING, Status.CANCELLING)
    RESUMABLE = (Status.CANCELLED, Status.FAILED)

    class Recipe(models.TextChoices):
        SFT = "sft", "sft - reasoning SFT (cold start)"
        GRPO = "grpo", "grpo - rule-based rewards"
        DPO = "dpo", "dpo - hard-sample DPO"
        HEADS = "heads", "heads - refit the latent heads (CPU, minutes)"

    recipe = models.CharField(max_length=8, choices=Recipe.choices)
    # JSONL paths and/or "reviewed:<slug>".
    data_sources = models.JSONField(default=list)
    policy = models.CharField(max_length=100, default="auto", help_text="auto, a policy slug or a preset name")
    base_model = models.CharField(max_length=500, default="embedded")
    init_adapter = models.CharField(max_length=500, blank=True, default="")
    hyperparameters = models.JSONField(default=dict, blank=True)

    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED, db_index=True)
    stage = models.CharField(max_length=12, choices=Stage.choices, default=Stage.WAITING)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    # [{"step": n, "loss": x, "reward": y, "rewards": {component: mean}, ...}, ...]
    metrics = models.JSONField(default=list, blank=True)
    # Data mix (counts per source and label), timing, evaluation summary.
    summary = models.JSONField(default=dict, blank=True)
    log_tail = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    output_dir = models.CharField(max_length=500, blank=True, default="")
    checkpoint_path = models.CharField(max_length=500, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    candidate = models.ForeignKey("guard.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="training_jobs")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"training job {self.pk} ({self.recipe}, {self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def can_cancel(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    @property
    def can_resume(self) -> bool:
        return self.status in self.RESUMABLE

    @property
    def is_stale(self) -> bool:
        return (timezone.now() - self.updated_at).total_seconds() > STALE_AFTER_SECONDS

    @property
    def progress_percent(self) -> int:
        if not self.total_steps:
            return 0
        return min(100, round(100 * self.step / self.total_steps))

    @property
    def last_metrics(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}

    @property
    def is_terminal(self) -> bool:
        return not self.is_active

    @property
    def phase(self) -> str:
        """Where the job is, in words that agree with its status (the stage alone goes stale)."""
        if self.status == self.Status.QUEUED:
            return "waiting for a worker"
        if self.status == self.Status.RUNNING:
            return self.get_stage_display()
        if self.status == self.Status.CANCELLING:
            return f"stopping after step {self.step}"
        if self.status == self.Status.CANCELLED:
            return f"cancelled at step {self.step}" if self.step or self.started_at else "cancelled before it started"
        if self.status == self.Status.FAILED:
            return f"failed while {self.get_stage_display()}" if self.stage != self.Stage.WAITING else "failed"
        return "done"

    @property
    def data_mix(self) -> dict[str, Any]:
        return self.summary.get("data_mix", {})


class RegistryEvent(models.Model):
    """Who promoted or rolled back which model, when, and what the regression gate said."""

    class Action(models.TextChoices):
        PROMOTE = "promote"
        FORCED_PROMOTE = "forced_promote", "promote (forced)"
        ROLLBACK = "rollback"
        REFUSED = "refused", "promotion refused"

    action = models.CharField(max_length=16, choices=Action.choices)
    model_version = models.ForeignKey("guard.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="registry_events")
    # The production model before the change ("embedded" when there was none).
    previous = models.CharField(max_length=100, blank=True, default="")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    note = models.TextField(blank=True, default="")
    # The comparison at the time: regressions found, threshold, policies switched.
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.action} {self.model_version} at {self.created_at:%Y-%m-%d %H:%M}"
