"""The model registry."""

from __future__ import annotations

from django.db import models


class ModelVersion(models.Model):
    """A guard model that can serve a policy: a base model plus an optional LoRA adapter."""

    class Status(models.TextChoices):
        CANDIDATE = "candidate"
        PRODUCTION = "production"
        RETIRED = "retired"

    name = models.SlugField(max_length=100, unique=True)
    # A local directory, or "embedded" for the bundled Gemma 3 270M.
    base_model_path = models.CharField(max_length=500, default="embedded")
    adapter_path = models.CharField(max_length=500, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE)
    # Which job and which data produced it (data files with their licences, recipe, commands).
    provenance = models.JSONField(default=dict, blank=True)
    # Evaluation report(s): {"report": {...}, "calibration": {...}}.
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name
