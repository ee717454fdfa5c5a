"""The one interface every guard backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from guard.contract import Mode, PolicySpec, Verdict


def setting(name: str, default: Any) -> Any:
    """A Django setting, or ``default`` where Django is not configured (bench scripts, notebooks)."""
    try:
        from django.conf import settings

        return getattr(settings, name, default) if settings.configured else default
    except Exception:  # noqa: BLE001 - usable without Django
        return default


class GuardError(Exception):
    """A request the guard cannot judge (bad input, unknown model); the message says why."""


@dataclass(frozen=True)
class GuardRequest:
    policy: PolicySpec
    prompt: str
    response: str | None = None
    mode: Mode = "fast"
    # Optional LoRA adapter directory for this request (vLLM serves one per request).
    adapter_path: str | None = None
    # Free-form tag carried through unchanged (e.g. an item id).
    tag: str | int | None = None
    extra: dict = field(default_factory=dict, hash=False, compare=False)


class GuardBackend(Protocol):
    name: str

    def classify_batch(self, requests: list[GuardRequest]) -> list[Verdict]:
        """One verdict per request, in order. Never raises for one bad model output:
        an unparseable answer becomes a verdict whose ``raw_output`` keeps the text and
        whose ``parse_error`` says why (``guard.contract.failed_verdict``)."""
        ...
