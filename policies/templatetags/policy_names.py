"""Human names for what is stored as a key: presets ("jbb_category" -> "JailbreakBench categories")."""

from __future__ import annotations

from django import template

from policies import presets

register = template.Library()


@register.filter
def policy_title(value: str) -> str:
    """An evaluation's policy: "auto", a preset key or a policy slug, named for people."""
    if value == "auto":
        return "auto (each record under its own taxonomy)"
    if value in presets.PRESET_TITLES:
        return f"preset: {presets.preset_title(value)}"
    return value
