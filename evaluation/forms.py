from __future__ import annotations

from pathlib import Path
from typing import Any

from django import forms

from evaluation.datasets import SHIPPED_DATA_DIR, benchmark_files, shipped_files
from evaluation.harness import AUTO_POLICY
from guard import serving

MAX_LIMIT = 100_000
MAX_BATCH = 256


def dataset_files() -> list[Path]:
    """The benchmark files offered in the browser: the shipped evaluation set, then the shared corpus
    (``evaluation.datasets``). The browser never names arbitrary server paths; the CLI takes any path."""
    return benchmark_files()


def _file_label(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            count = sum(1 for line in handle if line.strip())
    except OSError:
        return path.name
    origin = "shipped with Guardsite" if path.parent == SHIPPED_DATA_DIR else "shared corpus"
    return f"{path.name} ({count} records, {origin})"


def model_choices() -> list[tuple[str, str]]:
    from guard.models import ModelVersion

    # By registered name and role, never a server path.
    choices = [("", f"deployment default: {serving.default_model_label()}"), ("embedded", serving.EMBEDDED_BASE_LABEL)]
    for version in ModelVersion.objects.exclude(status=ModelVersion.Status.RETIRED).order_by("-created_at"):
        choices.append((version.name, serving.model_label(version)))
    return choices


def policy_choices() -> list[tuple[str, str]]:
    from policies import presets
    from policies.models import Policy

    choices = [(AUTO_POLICY, "auto: each record under its own taxonomy")]
    for policy in Policy.objects.filter(versions__number__isnull=False).distinct().order_by("name"):
        choices.append((policy.slug, f"policy: {policy.name}"))
    for name in presets.preset_names():
        choices.append((name, f"preset: {presets.preset_title(name)}"))
    return choices


class StartEvaluationForm(forms.Form):
    data = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple, label="Benchmark files",
                                     error_messages={"required": "Choose at least one benchmark file."})
    model = forms.ChoiceField(required=False)
    mode = forms.ChoiceField(choices=serving.mode_choices, initial="fast")
    policy = forms.ChoiceField(initial=AUTO_POLICY)
    limit = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_LIMIT, initial=50, label="Records per file (empty: all)"
    )
    batch_size = forms.IntegerField(min_value=1, max_value=MAX_BATCH, initial=16)
    policy_following = forms.BooleanField(
        required=False, initial=True, label="Also judge the policy-following pairs",
        help_text="72 texts, each under a policy whose custom category covers it and one without it "
                  "(evaluation/policy_following.jsonl; no category or text of them is trained on)",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.files = {p.name: p for p in dataset_files()}
        self.fields["data"].choices = [(name, _file_label(path)) for name, path in self.files.items()]
        # The shipped set is always there: a run can start without choosing anything.
        self.fields["data"].initial = [p.name for p in shipped_files() if p.name in self.files]
        self.fields["model"].choices = model_choices()
        self.fields["policy"].choices = policy_choices()

    def data_paths(self) -> list[str]:
        return [str(self.files[name].resolve()) for name in self.cleaned_data["data"]]
