"""Template filters: names instead of server paths (``trainer.names``)."""

from __future__ import annotations

from django import template

from trainer import names

register = template.Library()


@register.filter
def path_name(value: str | None) -> str:
    return names.path_name(value)


@register.filter
def command_names(value: str | None) -> str:
    return names.command_names(value)
