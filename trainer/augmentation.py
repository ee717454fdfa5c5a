"""Policy augmentation (GSPR-style) for training examples.

The category order is shuffled and a random subset of categories is shown. An
unsafe example always keeps its gold categories; a safe example may get any
subset (safe under a policy means safe under any part of it); an unsafe example
whose gold categories are unknown keeps them all (a subset could drop the very
rule it breaks). A share of examples also gets new codes in shown order, so no
code position is a safe guess.
"""

from __future__ import annotations

import random
from dataclasses import replace

from guard.contract import PolicySpec
from trainer import policy_following
from trainer.examples import GoldLabels

# Policies longer than this are always shown as a subset (aart_crime has 70
# categories, catqa 66): the whole block would crowd out the conversation.
DEFAULT_MAX_CATEGORIES = 16
# Share of the chosen examples whose categories are renumbered in shown order (see ``renumber_codes``).
RENUMBER_SHARE = 0.3


def augment_policy(policy: PolicySpec, gold: GoldLabels, rng: random.Random, *, shuffle: float = 0.5,
                   subset: float = 0.5, max_categories: int = DEFAULT_MAX_CATEGORIES) -> PolicySpec:
    """Shuffle categories (with probability ``shuffle``) and show a random subset
    (with probability ``subset``) that keeps the gold ones. Evaluation shows the
    whole policy in order, so about half of the examples keep each of those.

    Unsafe examples with unknown gold categories keep every category (only the
    order changes) unless the policy is too long, when the subset still keeps
    the gold codes. ``max_categories`` caps the shown list in every case.
    """
    categories = list(policy.categories)
    if not categories:
        return policy
    gold_codes = set(gold.categories) if gold.is_unsafe else set()
    keep = [c for c in categories if c.code in gold_codes]
    others = [c for c in categories if c.code not in gold_codes]
    may_subset = rng.random() < subset and (not gold.is_unsafe or gold.categories_known)
    if may_subset:
        low = 0 if keep else 1
        count = rng.randint(low, len(others))
        others = rng.sample(others, count)
    limit = max(max_categories - len(keep), 0 if keep else 1)
    if len(others) > limit:
        others = rng.sample(others, limit)
    chosen = {c.code for c in keep + others}
    shown = [c for c in categories if c.code in chosen]
    if rng.random() < shuffle:
        rng.shuffle(shown)
    return PolicySpec(name=policy.name, categories=tuple(shown), description=policy.description)


def renumber_codes(policy: PolicySpec, gold: GoldLabels, rng: random.Random) -> tuple[PolicySpec, GoldLabels]:
    """New codes for the shown categories in their shown order (S1.., C1.., P1..): the violated
    category's code then depends on where it is shown, so no code (say the first) is a safe guess."""
    prefix = rng.choice(policy_following.CODE_SCHEMES)
    mapping = {c.code: f"{prefix}{index}" for index, c in enumerate(policy.categories, start=1)}
    categories = tuple(replace(c, code=mapping[c.code]) for c in policy.categories)
    renamed = replace(gold, categories=tuple(mapping[code] for code in gold.categories if code in mapping))
    return PolicySpec(name=policy.name, categories=categories, description=policy.description), renamed
