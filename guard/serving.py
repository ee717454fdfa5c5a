"""Which model serves what, named the way operators know it: a registered model's
name and role ("guardsite-guard-270m (production)"), never a server path.

A policy is served by its ``production_model`` when it has one, else by the
deployment default (``settings.GUARD_MODEL_DIR``): the shipped guard, a model
directory, or the untrained embedded base.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from guard import embedded
from guard.models import ModelVersion
from guard.shipped import SHIPPED_NAME

EMBEDDED_BASE_LABEL = "Gemma 3 270M base (embedded, untrained)"


def current_production() -> ModelVersion | None:
    """The model in production (new policies start on it), or None."""
    return ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).order_by("-promoted_at", "-pk").first()


def _configured_default() -> str:
    return (settings.GUARD_MODEL_DIR or "").strip()


def default_model_version() -> ModelVersion | None:
    """The registered model that the deployment default (``GUARD_MODEL_DIR``) points at, if any."""
    configured = _configured_default()
    if not configured or configured == embedded.EMBEDDED_NAME:
        return None
    by_name = ModelVersion.objects.filter(name=configured).first()
    if by_name is not None:
        return by_name
    target = Path(configured).expanduser().resolve()
    for version in ModelVersion.objects.exclude(adapter_path="").order_by("-created_at"):
        if Path(version.adapter_path).expanduser().resolve() == target:
            return version
    return None


def model_label(version: ModelVersion) -> str:
    return f"{version.name} ({version.status})"


def default_model_label() -> str:
    """The deployment default by name and role; a directory only by its last component."""
    version = default_model_version()
    if version is not None:
        return model_label(version)
    configured = _configured_default()
    if not configured or configured == embedded.EMBEDDED_NAME:
        return EMBEDDED_BASE_LABEL
    path = Path(configured).expanduser().resolve()
    if path == Path(settings.SHIPPED_GUARD_DIR).resolve():
        return f"{SHIPPED_NAME} (shipped guard, not registered)"
    return f"{path.name} (model directory, not registered)"


@dataclass(frozen=True)
class Serving:
    """What judges a policy's traffic."""

    label: str  # "guardsite-guard-270m (production)"
    version: ModelVersion | None  # the registered model, when there is one
    via_default: bool  # True: the policy has no model of its own and follows the deployment default

    @property
    def name(self) -> str:
        return self.version.name if self.version is not None else self.label


def serving(policy: Any) -> Serving:
    """The model that actually serves ``policy`` (anything with a ``production_model``)."""
    production = getattr(policy, "production_model", None)
    if production is not None:
        return Serving(label=model_label(production), version=production, via_default=False)
    return Serving(label=default_model_label(), version=default_model_version(), via_default=True)


# The guard's two modes, by what they give the operator (the values stay "fast" / "reason").
MODE_LABELS = {"fast": "fast (label only)", "reason": "reason (with an explanation)"}


def mode_choices() -> list[tuple[str, str]]:
    from guard.contract import MODES

    return [(mode, MODE_LABELS.get(mode, mode)) for mode in MODES]
