"""Evaluation runs started from the browser (the CLI writes report files instead)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import models


class EvaluationRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    # "" = the deployment's default model (GUARD_MODEL_DIR or the embedded one).
    model = models.CharField(max_length=500, blank=True, default="")
    mode = models.CharField(max_length=10, default="fast")
    policy = models.CharField(max_length=100, default="auto")
    # Absolute paths of the JSONL files (or directories) evaluated.
    data = models.JSONField(default=list)
    limit = models.PositiveIntegerField(null=True, blank=True)
    batch_size = models.PositiveIntegerField(default=16)
    # Also judge the committed policy-following pairs (``evaluation.policy_following``): does the model
    # follow custom categories it was never trained on? Reported under ``report["policy_following"]``.
    policy_following = models.BooleanField(default=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    report = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    # How often the task was (re)started: a run whose worker died is re-queued by the sweeper.
    attempts = models.PositiveIntegerField(default=0)
    # Written every few seconds by the task while it runs; a stale one means the worker died.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"evaluation #{self.pk} ({self.model_label}, {self.mode})"

    @property
    def model_label(self) -> str:
        return self.model or "default model"

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    @property
    def progress(self) -> float:
        """Fraction done, 0..1."""
        if self.status == self.Status.DONE:
            return 1.0
        return self.done / self.total if self.total else 0.0

    @property
    def progress_percent(self) -> int:
        return int(round(self.progress * 100))

    @property
    def data_names(self) -> list[str]:
        return [Path(p).name for p in self.data]

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    def summary(self) -> dict[str, Any]:
        """Headline numbers of a finished run (empty while it runs)."""
        if not self.report:
            return {}
        tasks = self.report.get("tasks", {})
        return {
            "prompt_f1": tasks.get("prompt", {}).get("f1"),
            "response_f1": tasks.get("response", {}).get("f1"),
            "refusal_f1": tasks.get("refusal", {}).get("f1"),
            "items_per_second": self.report.get("items_per_second"),
            "n": self.report.get("n"),
        }
