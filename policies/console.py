"""The test console: judge one prompt (and response) against a policy version, synchronously."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django import forms

from guard import serving
from guard.backends.base import GuardError, GuardRequest
from guard.calibration import FieldDecision, field_decisions
from guard.contract import Mode, Verdict
from guard.models import ModelVersion
from policies.models import PolicyVersion

EMBEDDED_CHOICE = "embedded"


@dataclass
class ConsoleResult:
    verdict: Verdict | None
    error: str = ""
    seconds: float = 0.0
    model_label: str = ""
    # The calibrated decision thresholds the labels were chosen under.
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def decisions(self) -> list[FieldDecision]:
        """Each label with its probability and the threshold that decided it."""
        if self.verdict is None:
            return []
        labels = {"prompt": self.verdict.prompt_label, "response": self.verdict.response_label, "refusal": self.verdict.refusal_label}
        return field_decisions(self.verdict.probabilities, self.thresholds, labels)


def default_model_label() -> str:
    """The deployment default by registered name and role (never a server path)."""
    return serving.default_model_label()


def model_choices() -> list[tuple[str, str]]:
    """"embedded" (the deployment default) and every other registered model version.

    The registered model the deployment default points at is listed once, as the default.
    """
    default = serving.default_model_version()
    choices = [(EMBEDDED_CHOICE, f"{default_model_label()} · deployment default")]
    for version in ModelVersion.objects.order_by("name"):
        if default is None or version.pk != default.pk:
            choices.append((version.name, serving.model_label(version)))
    return choices


def initial_model(policy: object) -> str:
    """The console's first choice: the model that serves ``policy``."""
    production = getattr(policy, "production_model", None)
    default = serving.default_model_version()
    if production is None or (default is not None and production.pk == default.pk):
        return EMBEDDED_CHOICE
    return production.name


class ModelChoiceField(forms.ChoiceField):
    """A model choice; the default model's own name is accepted too (it is listed as the default)."""

    def valid_value(self, value: str) -> bool:
        default = serving.default_model_version()
        return super().valid_value(value) or (default is not None and value == default.name)


def run_console(version: PolicyVersion, prompt: str, response: str, mode: Mode, model: str) -> ConsoleResult:
    from guard import runtime

    request = GuardRequest(policy=version.to_spec(), prompt=prompt, response=response.strip() or None, mode=mode)
    # "embedded" means the deployment default: the runtime then honours GUARD_MODEL_DIR.
    model_arg = None if model in ("", EMBEDDED_CHOICE) else model
    label = default_model_label() if model_arg is None else model
    registered = ModelVersion.objects.filter(name=model_arg).first() if model_arg else None
    if registered is not None:
        label = serving.model_label(registered)
    started = time.monotonic()
    try:
        verdicts = runtime.classify([request], model=model_arg)
    except GuardError as exc:
        return ConsoleResult(verdict=None, error=str(exc), seconds=time.monotonic() - started, model_label=label)
    seconds = time.monotonic() - started
    thresholds = dict(getattr(runtime.get_backend(model_arg), "thresholds", None) or {})
    return ConsoleResult(verdict=verdicts[0], seconds=seconds, model_label=label, thresholds=thresholds)
