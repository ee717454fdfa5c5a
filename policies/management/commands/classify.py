"""``manage.py classify``: one verdict for a prompt (and response) under a policy, as JSON.

It lives with the policies because it resolves them (a slug, ``slug@N`` or a preset) before it asks
the guard; the guard itself imports nothing above it.
"""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from guard.backends.base import GuardError, GuardRequest
from guard.contract import MODES, PolicySpec


def policy_for(reference: str) -> tuple[PolicySpec, str | None]:
    """``slug`` (latest published version), ``slug@N`` (version N) or a preset name.

    Returns the spec and the policy's production model name (None: the default).
    """
    from policies import presets
    from policies.models import Policy

    slug, _, number = reference.strip().partition("@")
    policy = Policy.objects.filter(slug=slug).select_related("production_model").first()
    if policy is None:
        if number:
            raise CommandError(f"unknown policy {slug!r}")
        try:
            return presets.preset_spec(slug), None
        except KeyError as error:
            raise CommandError(
                f"unknown policy {slug!r}: no policy with that slug and no preset of that name "
                f"(presets: {', '.join(presets.preset_names())})"
            ) from error
    if number:
        if not number.isdigit():
            raise CommandError(f"bad policy version {number!r}: expected a number, as in {slug}@2")
        version = policy.versions.filter(number=int(number)).first()
        if version is None:
            raise CommandError(f"policy {slug!r} has no version {number}")
    else:
        version = policy.latest_version()
        if version is None:
            raise CommandError(f"policy {slug!r} has no published version yet (publish its draft first)")
    model = policy.production_model.name if policy.production_model else None
    return version.to_spec(), model


class Command(BaseCommand):
    help = "Judge one conversation with the guard and print the verdict as JSON."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--policy", required=True, help="policy slug, slug@VERSION, or a preset name")
        parser.add_argument("--prompt", required=True, help="the user prompt to judge")
        parser.add_argument("--response", default=None, help="the AI response to judge (optional)")
        parser.add_argument("--mode", choices=MODES, default="fast")
        parser.add_argument(
            "--model", default=None, help="embedded, a model version name or a local directory (default: the policy's production model)"
        )

    def handle(self, *args: Any, policy: str, prompt: str, response: str | None, mode: str, model: str | None, **options: Any) -> None:
        from guard import runtime

        if not prompt.strip():
            raise CommandError("--prompt is empty: there is nothing to judge")
        spec, production_model = policy_for(policy)
        request = GuardRequest(policy=spec, prompt=prompt, response=response, mode=mode)  # type: ignore[arg-type]
        try:
            verdict = runtime.classify([request], model=model or production_model)[0]
        except GuardError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(json.dumps(verdict.to_dict(), indent=2, ensure_ascii=False))
