"""``{% replay_form policy %}``: the editor's "Try the draft on recent traffic" card (the form lives
with the replays it starts, in ``moderation/replay.html``)."""

from __future__ import annotations

from typing import Any

from django import template

from moderation.replay_views import form_context

register = template.Library()


@register.inclusion_tag("moderation/replay.html#replay-form")
def replay_form(policy: Any, editable: bool = True) -> dict[str, Any]:
    return form_context(policy, editable=editable)
