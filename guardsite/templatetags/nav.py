"""The top bar: which section the current page belongs to."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

# The first path segment of each top-bar section ("" is the overview at "/").
SECTIONS = {"": "overview"}


def section_of(path: str) -> str:
    first = path.strip("/").split("/", 1)[0]
    return SECTIONS.get(first, first)


@register.simple_tag(takes_context=True)
def nav_current(context: dict[str, Any], section: str) -> SafeString:
    """`` aria-current="page"`` on the top-bar link of the section the page is in."""
    request = context.get("request")
    if request is not None and section_of(request.path) == section:
        return mark_safe(' aria-current="page"')
    return mark_safe("")
