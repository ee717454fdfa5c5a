"""A policy spec as JSON and back: training records, reward functions and draft replays store
the spec a text was (or will be) judged under, byte for byte reproducible."""

from __future__ import annotations

import json
from dataclasses import asdict
from functools import lru_cache

from guard.contract import CategorySpec, PolicySpec

TAUGHT_FIELDS = ("taught_violating", "taught_allowed")


def spec_to_json(spec: PolicySpec) -> str:
    """The spec as JSON; reviewers' taught examples only where there are some (the heads' business:
    records written before they existed stay byte for byte the same)."""
    data = asdict(spec)
    for category in data["categories"]:
        for name in TAUGHT_FIELDS:
            if not category[name]:
                del category[name]
    return json.dumps(data, sort_keys=True, ensure_ascii=False)


@lru_cache(maxsize=4096)
def spec_from_json(text: str) -> PolicySpec:
    data = json.loads(text)
    categories = tuple(
        CategorySpec(
            code=c["code"],
            name=c["name"],
            description=c.get("description", ""),
            violating_examples=tuple(c.get("violating_examples", ())),
            allowed_examples=tuple(c.get("allowed_examples", ())),
            taught_violating=tuple(c.get("taught_violating", ())),
            taught_allowed=tuple(c.get("taught_allowed", ())),
        )
        for c in data.get("categories", ())
    )
    return PolicySpec(name=data["name"], categories=categories, description=data.get("description", ""))
