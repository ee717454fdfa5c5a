"""The transformers backend keeps its answers: 64 fixed requests (two policies,
prompt-only and with a response, two over-long ones) judged by the real
embedded model on CPU must give the verdicts recorded in
``data/backend_regression.json`` (written by ``data/make_backend_regression.py``
before the batched rewrite): the same labels, categories and explanations, and
probabilities within 1e-4."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guard.backends.base import GuardRequest
from guard.contract import CategorySpec, PolicySpec

DATA = Path(__file__).parent / "data" / "backend_regression.json"
TOLERANCE = 1e-4

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(DATA.read_text())


def requests_for(recorded: dict, mode: str) -> list[GuardRequest]:
    from policies import presets

    categories = tuple(
        CategorySpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()}) for c in recorded["small_policy"]
    )
    small = PolicySpec("Test policy", categories=categories)
    policies = {"small": small, "mlcommons_hazards": presets.preset_spec("mlcommons_hazards")}
    return [GuardRequest(policies[i["policy"]], i["prompt"], i["response"], mode=mode) for i in recorded["items"]]


def differences(expected: dict, verdict) -> list[str]:
    found = []
    for name in ("prompt_label", "response_label", "refusal_label", "categories", "explanation", "truncated", "parse_error"):
        if getattr(verdict, name) != expected[name]:
            found.append(f"{name}: {getattr(verdict, name)!r} != {expected[name]!r}")
    if verdict.probabilities.keys() != expected["probabilities"].keys():
        found.append(f"probability fields {sorted(verdict.probabilities)} != {sorted(expected['probabilities'])}")
        return found
    for field_name, dist in expected["probabilities"].items():
        got = verdict.probabilities[field_name]
        if got.keys() != dist.keys() or any(abs(got[k] - dist[k]) > TOLERANCE for k in dist):
            found.append(f"{field_name}: {got} != {dist}")
    return found


@pytest.mark.parametrize("mode", ["fast", "reason"])
def test_verdicts_on_the_fixed_items_are_unchanged(embedded_backend, recorded, mode):
    assert embedded_backend.max_new_tokens == recorded["max_new_tokens"]
    verdicts = embedded_backend.classify_batch(requests_for(recorded, mode))
    problems = {
        item["id"]: found
        for item, verdict in zip(recorded["items"], verdicts, strict=True)
        if (found := differences(item[mode], verdict))
    }
    assert not problems, problems
