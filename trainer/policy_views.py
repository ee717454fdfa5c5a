"""Examples shown under a policy other than their record's own (GSPR / RSafe: the policy decides).

* generated policy-following examples: custom categories under covering and non-covering policies;
* policy flips: an unsafe corpus example under its policy without its categories (gold safe);
* cross-policy safe examples: an all-safe example under another taxonomy or preset (gold unchanged).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from guard.contract import SAFE, UNSAFE, PolicySpec
from trainer import explanations as explaining
from trainer import licences as licensing
from trainer import policy_following
from trainer.examples import GoldLabels, TrainingExample

GENERATED_POLICY_FOLLOWING = "generated/policy_following"
GENERATED_POLICY_FLIP = "generated/policy_flip"
# Share of the chosen all-safe examples shown under another policy (see ``cross_policy``).
CROSS_POLICY_SHARE = 0.3


def cross_policy(example: TrainingExample, pool: Sequence[PolicySpec], rng: random.Random) -> bool:
    """Show an all-safe example under a policy drawn from ``pool`` (the corpus taxonomies and the presets).

    Why: most taxonomies come with one kind of record (attack sets with their hazard lists are nearly all unsafe),
    so the policy alone predicted the label; a guard trained that way flagged everything under the MLCommons
    preset. Safe text stays safe under any of these policies (none of them is an operator's custom rule), so
    the gold needs no change. Returns whether it moved."""
    gold = example.gold
    if gold.is_unsafe or gold.categories or "prompt" in gold.unknown or not pool:
        return False
    policy = rng.choice(pool)
    if policy.name == example.policy.name:
        return False
    example.policy = policy
    return True


def policy_following_examples(count: int, seed: int) -> list[TrainingExample]:
    """Generated custom-category examples (``trainer.policy_following``), licence Apache-2.0 (ours)."""
    out = []
    for record in policy_following.training_records(count, seed):
        gold = GoldLabels(prompt_label=UNSAFE if record.unsafe else SAFE, response_label=None, refusal_label=None,
                          categories=(record.code,) if record.unsafe and record.code else (), categories_known=True)
        category = next(c for c in policy_following.TRAIN_CATEGORIES if c.key == record.category)
        example = TrainingExample(id=record.id, source=GENERATED_POLICY_FOLLOWING, policy=record.policy, prompt=record.prompt,
                                  response=None, gold=gold, licence=licensing.PROJECT_LICENCE)
        if record.variant in ("removed", "allowed"):
            example.not_covered = category.name.lower()
            example.not_covered_how = "allows" if record.variant == "allowed" else "does not list"
        out.append(example)
    return out


def policy_flip_examples(candidates: Sequence[TrainingExample], count: int, rng: random.Random) -> list[TrainingExample]:
    """Unsafe corpus examples with known categories, re-shown under their policy without those
    categories (removed, or described as allowed): gold safe. The twin keeps its record's licence."""
    eligible = [e for e in candidates if e.gold.is_unsafe and e.gold.categories_known and e.gold.categories
                and len(e.policy.categories) > len(e.gold.categories) and not e.source.startswith("generated")
                and "prompt" not in e.gold.unknown]
    out = []
    for example in rng.sample(eligible, min(count, len(eligible))):
        removed = [c for c in example.policy.categories if c.code in example.gold.categories]
        policy, kind = policy_following.without_categories(example.policy, example.gold.categories, rng)
        # Safe once no shown category applies: the labels of every judged text become safe.
        gold = replace(example.gold, prompt_label=SAFE, response_label=SAFE if example.has_response else None,
                       categories=(), categories_known=True)
        twin = replace(example, id=f"{example.id}~flip", source=GENERATED_POLICY_FLIP, policy=policy, gold=gold,
                       not_covered=" and ".join(explaining.readable_name(c).lower() for c in removed[:2]),
                       not_covered_how="allows" if kind == "allowed" else "does not list")
        out.append(twin)
    return out


def policy_pool(candidates: Sequence[TrainingExample]) -> list[PolicySpec]:
    """Every corpus taxonomy among the candidates, plus the general and MLCommons presets, once each."""
    from policies import presets

    seen: dict[str, PolicySpec] = {}
    for policy in [presets.preset_spec(presets.GENERAL_DEFAULT), presets.preset_spec(presets.MLCOMMONS),
                   *(e.policy for e in candidates if not e.source.startswith(("generated/", "reviewed")))]:
        seen.setdefault(policy.name, policy)
    return list(seen.values())
