"""The "start a training job" form.

The browser never names arbitrary server paths: data files are the shared
corpus, base models are "embedded" or prepared model directories in the model
cache (``GUARD_MODEL_CACHE``, plus ``GUARD_MODEL_DIR``), init adapters are
registered model versions. The CLI takes any path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings

from trainer.data import REVIEWED_PREFIX, shared_dataset_files
from trainer.models import TrainingJob

MAX_STEPS = 100_000
MAX_EXAMPLES = 1_000_000


def base_model_choices() -> list[tuple[str, str]]:
    choices = [("embedded", "embedded Gemma 3 270M (base)")]
    candidates: list[Path] = []
    if settings.GUARD_MODEL_DIR:
        candidates.append(Path(settings.GUARD_MODEL_DIR))
    cache = Path(settings.GUARD_MODEL_CACHE)
    if cache.is_dir():
        from guard import embedded

        embedded_dir = embedded.cached_model_dir().resolve()
        candidates.extend(p for p in sorted(cache.iterdir()) if p.is_dir() and not p.name.startswith(".") and p.resolve() != embedded_dir)
    for path in candidates:
        if (path / "config.json").is_file():
            choices.append((str(path), f"{path.name} (directory)"))
    return choices


def adapter_shape(adapter_dir: str) -> dict[str, Any]:
    """``{"lora_rank": r, "lora_layers": N}`` of a saved adapter (N = 0: every layer); {} when unreadable."""
    import json

    try:
        config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not config.get("r"):
        return {}
    layers = config.get("layers_to_transform")
    return {"lora_rank": int(config["r"]), "lora_layers": len(layers) if isinstance(layers, list) else 0}


def describe_shape(shape: dict[str, Any]) -> str:
    if not shape:
        return ""
    where = f"the top {shape['lora_layers']} layers" if shape["lora_layers"] else "every layer"
    return f"LoRA r={shape['lora_rank']} on {where}"


def init_adapter_choices() -> list[tuple[str, str]]:
    """A fresh adapter, then the production model (the usual way to improve it), then other versions."""
    from guard.models import ModelVersion

    choices = [("", "none: a fresh LoRA adapter")]
    versions = list(ModelVersion.objects.exclude(adapter_path="").order_by("-created_at"))
    versions.sort(key=lambda v: v.status != ModelVersion.Status.PRODUCTION)
    for version in versions:
        shape = describe_shape(adapter_shape(version.adapter_path))
        prefix = "production: " if version.status == ModelVersion.Status.PRODUCTION else ""
        label = f"{prefix}{version.name} ({version.status}{', ' + shape if shape else ''})"
        choices.append((version.name, label))
    return choices


def reviewed_labels(slug: str) -> dict[str, int]:
    """{"unsafe": n, "safe": m}: a policy's reviewed items by their latest decision (unsafe: prompt or response)."""
    try:
        from moderation.export import reviewed_records
    except ImportError:
        return {}
    counts = {"unsafe": 0, "safe": 0}
    for record in reviewed_records(slug):
        unsafe = "unsafe" in (record.get("prompt_label"), record.get("response_label"))
        counts["unsafe" if unsafe else "safe"] += 1
    return counts


def reviewed_item_counts() -> dict[str, int]:
    """{policy slug: reviewed items}: what Training -> New offers as the reviewed-items data source."""
    try:
        from django.db.models import Count

        from moderation.models import Item
    except ImportError:
        return {}
    rows = (
        Item.objects.filter(decisions__isnull=False)
        .values_list("policy_version__policy__slug")
        .annotate(n=Count("id", distinct=True))
    )
    return dict(rows)


def reviewed_policy_choices() -> list[tuple[str, str]]:
    """Each policy with its reviewed items, those with some first (a job needs some of them)."""
    counts = reviewed_item_counts()
    slugs = sorted(policy_slugs(), key=lambda slug: (not counts.get(slug), slug))
    return [(slug, f"{slug} ({counts.get(slug, 0)} reviewed)") for slug in slugs]


def policy_slugs() -> list[str]:
    from policies.models import Policy

    return list(Policy.objects.order_by("slug").values_list("slug", flat=True))


def adapter_base_mismatch(adapter_dir: str, base: str) -> str:
    """Why ``adapter_dir`` cannot continue on ``base`` ("" when it can)."""
    import json

    config_file = Path(adapter_dir) / "adapter_config.json"
    if not config_file.is_file():
        return f"The adapter directory {adapter_dir} has no adapter_config.json."
    trained_on = str(json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path") or "")
    from guard.embedded import resolve_model_path

    try:
        wanted = resolve_model_path(base).resolve()
        trained_path = resolve_model_path(trained_on).resolve() if trained_on == "embedded" else Path(trained_on).expanduser().resolve()
    except FileNotFoundError as error:
        return str(error)
    if trained_on and trained_path != wanted:
        return f"This adapter was trained on {trained_on}, not on the chosen base model."
    return ""


class StartTrainingForm(forms.Form):
    recipe = forms.ChoiceField(choices=TrainingJob.Recipe.choices, initial="sft", widget=forms.RadioSelect)
    data = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple, label="Benchmark files")
    reviewed = forms.BooleanField(required=False, label="Reviewed items of this policy")
    policy = forms.CharField(required=False, widget=forms.HiddenInput)
    render_under = forms.ChoiceField(
        choices=[("auto", "each record under its own taxonomy (recommended)"), ("policy", "this policy")],
        initial="auto", label="Render benchmark records under",
    )
    base_model = forms.ChoiceField(label="Base model")
    init_adapter = forms.ChoiceField(required=False, label="Start from adapter")
    max_steps = forms.IntegerField(min_value=1, max_value=MAX_STEPS, initial=100)
    # Not required: a continued adapter keeps its own rank and layers (the form disables both then).
    lora_rank = forms.IntegerField(required=False, min_value=1, max_value=256, initial=8, label="LoRA rank")
    lora_layers = forms.IntegerField(required=False, min_value=0, max_value=1024,
                                     label="Adapt only the top N layers (empty: all; fewer trains faster on a CPU)")
    full = forms.BooleanField(required=False, label="Full fine-tuning (no LoRA)")
    learning_rate = forms.FloatField(required=False, min_value=1e-8, max_value=1.0, label="Learning rate (empty: recipe default)")
    max_examples = forms.IntegerField(min_value=2, max_value=MAX_EXAMPLES, initial=2000, label="Examples (balanced)")
    batch_size = forms.IntegerField(min_value=1, max_value=256, initial=4)
    eval_limit = forms.IntegerField(min_value=1, max_value=100_000, initial=50, label="Records per file for the evaluation (held-out files and the shipped set)")
    tune_epochs = forms.IntegerField(
        required=False, min_value=0, max_value=50,
        label="Refit heads: tune layers 12-14 as the prompt head for N epochs (about 3 min each on 2 CPU cores; "
              "empty: keep the start model's)",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.files = {p.name: p for p in shared_dataset_files()}
        self.fields["data"].choices = [(name, name) for name in self.files]
        self.fields["base_model"].choices = base_model_choices()
        self.fields["init_adapter"].choices = init_adapter_choices()

    def clean_policy(self) -> str:
        slug = (self.cleaned_data.get("policy") or "").strip()
        if slug and slug not in policy_slugs():
            raise forms.ValidationError(f"Unknown policy {slug!r}.")
        return slug

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        slug = cleaned.get("policy") or ""
        if cleaned.get("reviewed") and not slug:
            self.add_error("reviewed", "Reviewed items need a policy: choose whose reviewed items to train on.")
        if cleaned.get("render_under") == "policy" and not slug:
            self.add_error("render_under", "Rendering under a policy needs a policy: start from a policy page.")
        if not cleaned.get("data") and not cleaned.get("reviewed"):
            self.add_error("data", "Choose at least one data source.")
        elif cleaned.get("reviewed") and slug and not cleaned.get("data"):
            # Reviewed items alone: the balanced mix needs both labels, or the job would build no examples.
            counts = reviewed_labels(slug)
            if not sum(counts.values()):
                self.add_error("reviewed", "This policy has no reviewed items yet: review items in the queue first, or choose a benchmark file.")
            elif not all(counts.values()):
                only = "unsafe" if counts["unsafe"] else "safe"
                self.add_error("reviewed", f"Every reviewed item of this policy is {only}: training balances safe and unsafe "
                                           "examples, so review items of the other label too, or add a benchmark file.")
        if cleaned.get("init_adapter") and cleaned.get("base_model"):
            problem = adapter_base_mismatch(self.init_adapter_path(), cleaned["base_model"])
            if problem:
                self.add_error("init_adapter", problem)
        heads = cleaned.get("recipe") == TrainingJob.Recipe.HEADS
        if heads and not cleaned.get("init_adapter"):
            self.add_error("init_adapter", "Refitting heads keeps a model's weights: choose that model as the start adapter.")
        if not heads and not cleaned.get("init_adapter") and not cleaned.get("full") and not cleaned.get("lora_rank") and "lora_rank" not in self.errors:
            self.add_error("lora_rank", "A fresh LoRA adapter needs a rank (8 is a good start).")
        return cleaned

    def init_shape(self) -> dict[str, Any]:
        """The chosen start adapter's rank and layers ({} without one): what a continued run keeps."""
        path = self.init_adapter_path()
        return adapter_shape(path) if path else {}

    def data_sources(self) -> list[str]:
        sources = [str(self.files[name]) for name in self.cleaned_data["data"]]
        if self.cleaned_data.get("reviewed"):
            sources.append(f"{REVIEWED_PREFIX}:{self.cleaned_data['policy']}")
        return sources

    def init_adapter_path(self) -> str:
        from guard.models import ModelVersion

        name = self.cleaned_data.get("init_adapter") or ""
        if not name:
            return ""
        version = ModelVersion.objects.filter(name=name).first()
        return version.adapter_path if version else ""

    def hyperparameters(self) -> dict[str, Any]:
        data = self.cleaned_data
        full = bool(data.get("full"))
        values: dict[str, Any] = {
            "max_steps": data["max_steps"],
            "lora_rank": data.get("lora_rank") or 8,
            "full": full,
            "max_examples": data["max_examples"],
            "batch_size": data["batch_size"],
            "eval_limit": data["eval_limit"],
        }
        if data.get("learning_rate"):
            values["learning_rate"] = data["learning_rate"]
        if data.get("recipe") == TrainingJob.Recipe.HEADS and data.get("tune_epochs"):
            values["tune_epochs"] = data["tune_epochs"]
        if data.get("lora_layers") and not full:
            values["lora_layers"] = data["lora_layers"]
        shape = self.init_shape()
        if shape and not full:
            # Continuing an adapter keeps its rank and layers: record those, never the form's fields.
            values["lora_rank"] = shape["lora_rank"]
            values.pop("lora_layers", None)
            if shape["lora_layers"]:
                values["lora_layers"] = shape["lora_layers"]
            values["lora_shape_from"] = "start adapter"
        return values

    def render_policy(self) -> str:
        return self.cleaned_data["policy"] if self.cleaned_data.get("render_under") == "policy" else "auto"
