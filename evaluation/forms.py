from __future__ import annotations

from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings

from evaluation.harness import AUTO_POLICY
from guard.contract import MODES

MAX_LIMIT = 100_000
MAX_BATCH = 256


def dataset_files() -> list[Path]:
    """The benchmark files offered in the browser: the shared corpus only.

    The browser never names arbitrary server paths; the CLI takes any path.
    """
    root = Path(settings.SHARED_DATASETS_DIR)
    return sorted(p for p in root.glob("*.jsonl") if p.is_file()) if root.is_dir() else []


def model_choices() -> list[tuple[str, str]]:
    from guard.models import ModelVersion

    choices = [("", "default model of this deployment"), ("embedded", "embedded Gemma 3 270M (base)")]
    for version in ModelVersion.objects.exclude(status=ModelVersion.Status.RETIRED).order_by("-created_at"):
        choices.append((version.name, f"{version.name} ({version.status})"))
    return choices


def policy_choices() -> list[tuple[str, str]]:
    from policies import presets
    from policies.models import Policy

    choices = [(AUTO_POLICY, "auto: each record under its own taxonomy")]
    for policy in Policy.objects.filter(versions__number__isnull=False).distinct().order_by("name"):
        choices.append((policy.slug, f"policy: {policy.name}"))
    for name in presets.preset_names():
        choices.append((name, f"preset: {name}"))
    return choices


class StartEvaluationForm(forms.Form):
    data = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple, label="Benchmark files")
    model = forms.ChoiceField(required=False)
    mode = forms.ChoiceField(choices=[(m, m) for m in MODES], initial="fast")
    policy = forms.ChoiceField(initial=AUTO_POLICY)
    limit = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_LIMIT, initial=50, label="Records per file (empty: all)"
    )
    batch_size = forms.IntegerField(min_value=1, max_value=MAX_BATCH, initial=16)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.files = {p.name: p for p in dataset_files()}
        self.fields["data"].choices = [(name, name) for name in self.files]
        self.fields["model"].choices = model_choices()
        self.fields["policy"].choices = policy_choices()

    def data_paths(self) -> list[str]:
        return [str(self.files[name].resolve()) for name in self.cleaned_data["data"]]
