from __future__ import annotations

from typing import Any

from django import forms
from django.utils.text import slugify

from guard.serving import mode_choices
from policies import presets
from policies.console import EMBEDDED_CHOICE, ModelChoiceField, model_choices
from policies.models import Category, Policy, PolicyVersion
from policies.validation import (
    MAX_DESCRIPTION_CHARS,
    MAX_NAME_CHARS,
    code_problem,
    duplicate_code_problem,
    examples_from_text,
    examples_problem,
    name_problem,
    slug_problem,
)

BLANK_PRESET = "blank"


def preset_choices() -> list[tuple[str, str]]:
    choices = [(BLANK_PRESET, "Blank (no categories)")]
    for name in presets.preset_names():
        title = presets.preset_title(name)
        if name not in (presets.GENERAL_DEFAULT, presets.MLCOMMONS):
            title += " (benchmark taxonomy)"
        choices.append((name, title))
    return choices


def name_taken_problem(name: str, policy: Policy | None = None) -> str | None:
    """Policy names are unique, ignoring case: a message when another policy uses ``name``."""
    other = Policy.objects.filter(name__iexact=name.strip())
    if policy is not None:
        other = other.exclude(pk=policy.pk)
    existing = other.first()
    if existing is None:
        return None
    return f"A policy named {existing.name!r} already exists (names are unique, ignoring case); choose another name."


def unique_slug(base: str) -> str:
    base = slugify(base)[:70] or "policy"
    slug, suffix = base, 2
    while Policy.objects.filter(slug=slug).exists() or slug_problem(slug):
        slug, suffix = f"{base}-{suffix}", suffix + 1
    return slug


class PolicyCreateForm(forms.Form):
    preset = forms.ChoiceField(choices=preset_choices, initial=presets.GENERAL_DEFAULT)
    name = forms.CharField(max_length=MAX_NAME_CHARS, required=False, help_text="Defaults to the preset's name.")
    slug = forms.CharField(max_length=80, required=False, help_text="Used in URLs and the API; derived from the name when empty.")
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False, max_length=MAX_DESCRIPTION_CHARS)

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"].strip()
        if slug and slug_problem(slug):
            raise forms.ValidationError(slug_problem(slug) or "")
        if slug and Policy.objects.filter(slug=slug).exists():
            raise forms.ValidationError(f"A policy with slug {slug!r} already exists.")
        return slug

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        name = (data.get("name") or "").strip()
        if data.get("preset") == BLANK_PRESET and not name:
            self.add_error("name", "A blank policy needs a name.")
        elif data.get("preset"):
            name = name or presets.preset_title(data["preset"])
            problem = name_taken_problem(name)
            if problem:
                if not (data.get("name") or "").strip():
                    problem = f"{problem} The preset's name is used when the name is empty."
                self.add_error("name", problem)
        return data


class VersionHeaderForm(forms.ModelForm):
    """The policy name and description as the draft renders them for the model."""

    class Meta:
        model = PolicyVersion
        fields = ["name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["name"].required = True

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        problem = name_problem(name) or name_taken_problem(name, self.instance.policy)
        if problem:
            raise forms.ValidationError(problem)
        return name


class ExamplesField(forms.CharField):
    """A list of examples edited as text, one example per line."""

    widget = forms.Textarea(attrs={"rows": 3, "placeholder": "One example per line"})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(value)
        return value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        if isinstance(value, list):
            return value
        return examples_from_text(super().to_python(value) or "")

    def validate(self, value: Any) -> None:
        problem = examples_problem(value)
        if problem:
            raise forms.ValidationError(problem)


class CategoryForm(forms.ModelForm):
    violating_examples = ExamplesField(required=False, label="Violating examples")
    allowed_examples = ExamplesField(required=False, label="Allowed examples")

    class Meta:
        model = Category
        fields = ["code", "name", "description", "violating_examples", "allowed_examples", "severity", "action"]
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "code": forms.TextInput(attrs={"placeholder": "S1", "autocomplete": "off"}),
        }

    def __init__(self, *args: Any, version: PolicyVersion, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.version = version
        # Our own messages (pattern, uniqueness) replace the model's generic ones.
        self.fields["code"].max_length = None
        self.fields["code"].validators = []
        self.fields["code"].required = False
        self.fields["name"].required = False

    def clean_code(self) -> str:
        code = (self.cleaned_data.get("code") or "").strip()
        others = self.version.categories.exclude(pk=self.instance.pk).values_list("code", flat=True)
        problem = code_problem(code) or duplicate_code_problem(code, list(others))
        if problem:
            raise forms.ValidationError(problem)
        return code

    def clean_name(self) -> str:
        name = (self.cleaned_data.get("name") or "").strip()
        problem = name_problem(name)
        if problem:
            raise forms.ValidationError(problem)
        return name

    def clean_description(self) -> str:
        return (self.cleaned_data.get("description") or "").strip()

    def validate_unique(self) -> None:
        # clean_code checks uniqueness (case-insensitively) with a clearer message.
        pass


class PublishForm(forms.Form):
    change_note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "What changed and why"}),
        max_length=2000,
        error_messages={"required": "Describe the change: the note is kept in the version history."},
    )


class ConsoleForm(forms.Form):
    version = forms.CharField(widget=forms.HiddenInput)
    prompt = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "The user's prompt"}),
        max_length=32000,
        error_messages={"required": "Enter a prompt to judge."},
    )
    response = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Optional: the AI's response"}), required=False, max_length=32000
    )
    mode = forms.ChoiceField(choices=mode_choices, initial="fast", widget=forms.RadioSelect)
    model = ModelChoiceField(choices=model_choices, initial=EMBEDDED_CHOICE)


class ImportForm(forms.Form):
    file = forms.FileField(required=False, help_text="A Policy JSON file (see the README).")
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 8, "placeholder": '{"format": "guardsite.policy/v1", ...}'}), required=False, label="or paste JSON")
    name = forms.CharField(max_length=MAX_NAME_CHARS, required=False, help_text="For a new policy; defaults to the file's name (names are unique).")
    slug = forms.CharField(max_length=80, required=False, help_text="For a new policy; defaults to the file's slug, else the name.")

    def content(self) -> bytes:
        upload = self.cleaned_data.get("file")
        if upload:
            return upload.read()
        return (self.cleaned_data.get("text") or "").encode("utf-8")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not data.get("file") and not (data.get("text") or "").strip():
            raise forms.ValidationError("Choose a file or paste the JSON.")
        return data
