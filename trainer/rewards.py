"""Rule-based rewards for GRPO (RSafe / GSPR style), as plain functions.

Each function has TRL's reward-function signature: ``(prompts, completions,
**kwargs) -> list[float | None]`` where ``kwargs`` carries the dataset columns
made by ``trainer.data.TrainingExample.columns`` (``policy``, ``has_response``,
``gold_prompt``, ``gold_response``, ``gold_refusal``, ``gold_categories``,
``categories_known``). ``None`` means "not applicable to this example" (e.g. a
refusal reward where the source has no refusal label): GRPOTrainer turns it
into NaN, leaves it out of the sum and out of the logged mean. GRPOTrainer logs
every function separately as ``rewards/<function name>/mean``.

Every answer is read with ``guard.contract.parse``: a completion that does not
parse earns 0 for format, labels and categories.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from guard.contract import EXPLANATION_WORD_BUDGET, Verdict, parse
from trainer.data import spec_from_json

Reward = float | None
RewardFunction = Callable[..., list[Reward]]


def completion_text(completion: Any) -> str:
    """A completion as text: TRL passes strings, or message lists for conversational data."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        last = completion[-1]
        if isinstance(last, dict):
            return str(last.get("content", ""))
    return str(completion or "")


@lru_cache(maxsize=8192)
def _parse_cached(text: str, policy_json: str, has_response: bool) -> Verdict | None:
    return parse(text, spec_from_json(policy_json), has_response).verdict


def parsed(completion: Any, policy_json: str, has_response: bool) -> Verdict | None:
    return _parse_cached(completion_text(completion), policy_json, bool(has_response))


def _column(kwargs: dict[str, Any], name: str, count: int, default: Any = None) -> list[Any]:
    values = kwargs.get(name)
    if values is None:
        return [default] * count
    return list(values)


def _verdicts(completions: Sequence[Any], kwargs: dict[str, Any]) -> list[Verdict | None]:
    policies = _column(kwargs, "policy", len(completions))
    has_response = _column(kwargs, "has_response", len(completions), False)
    return [parsed(c, p, h) for c, p, h in zip(completions, policies, has_response, strict=True)]


# --------------------------------------------------------------------------- the rewards


def format_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[Reward]:
    """1 when the answer parses under the example's policy, else 0."""
    return [1.0 if verdict is not None else 0.0 for verdict in _verdicts(completions, kwargs)]


def _label_reward(completions: Sequence[Any], kwargs: dict[str, Any], column: str, field: str) -> list[Reward]:
    gold = _column(kwargs, column, len(completions), "")
    rewards: list[Reward] = []
    for verdict, expected in zip(_verdicts(completions, kwargs), gold, strict=True):
        if not expected:
            rewards.append(None)
        elif verdict is None:
            rewards.append(0.0)
        else:
            rewards.append(1.0 if getattr(verdict, field) == expected else 0.0)
    return rewards


def prompt_label_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[Reward]:
    """1 when the prompt label matches gold."""
    return _label_reward(completions, kwargs, "gold_prompt", "prompt_label")


def response_label_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[Reward]:
    """1 when the response label matches gold; None where there is no gold response label."""
    return _label_reward(completions, kwargs, "gold_response", "response_label")


def refusal_label_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[Reward]:
    """1 when the refusal label matches gold; None where there is no gold refusal label."""
    return _label_reward(completions, kwargs, "gold_refusal", "refusal_label")


def category_f1(predicted: Sequence[str], gold: Sequence[str]) -> float:
    """F1 of two code sets; two empty sets agree perfectly (a safe verdict naming nothing)."""
    p = {c.casefold() for c in predicted}
    g = {c.casefold() for c in gold}
    if not p and not g:
        return 1.0
    if not p or not g:
        return 0.0
    return 2 * len(p & g) / (len(p) + len(g))


def category_f1_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[Reward]:
    """F1 of the predicted category codes against gold; None where gold categories are unknown."""
    count = len(completions)
    gold_lists = [json.loads(g) if isinstance(g, str) else list(g or []) for g in _column(kwargs, "gold_categories", count, "[]")]
    known = _column(kwargs, "categories_known", count, True)
    rewards: list[Reward] = []
    for verdict, gold, is_known in zip(_verdicts(completions, kwargs), gold_lists, known, strict=True):
        if not is_known:
            rewards.append(None)
        elif verdict is None:
            rewards.append(0.0)
        else:
            rewards.append(category_f1(verdict.categories, gold))
    return rewards


def word_budget_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[Reward]:
    """0 within the explanation budget (40 words); down to -1 as it grows to twice the budget.

    None for an answer that does not parse (format_reward already scores it 0).
    """
    rewards: list[Reward] = []
    for verdict in _verdicts(completions, kwargs):
        if verdict is None:
            rewards.append(None)
            continue
        over = verdict.explanation_words - EXPLANATION_WORD_BUDGET
        rewards.append(0.0 if over <= 0 else -min(1.0, over / EXPLANATION_WORD_BUDGET))
    return rewards


REWARD_FUNCTIONS: tuple[RewardFunction, ...] = (
    format_reward,
    prompt_label_reward,
    response_label_reward,
    refusal_label_reward,
    category_f1_reward,
    word_budget_reward,
)


def score(completion: Any, row: dict[str, Any]) -> dict[str, Reward]:
    """Every reward component for one completion of one dataset row."""
    kwargs = {key: [value] for key, value in row.items() if key not in ("prompt", "completion")}
    return {func.__name__: func([row.get("prompt")], [completion], **kwargs)[0] for func in REWARD_FUNCTIONS}


def is_correct(completion: Any, row: dict[str, Any]) -> bool:
    """Right answer: parses, every gold label matches, categories match exactly where known, within budget.

    Used to split sampled outputs into right and wrong for hard-sample DPO.
    """
    components = score(completion, row)
    if components["format_reward"] != 1.0:
        return False
    for name in ("prompt_label_reward", "response_label_reward", "refusal_label_reward"):
        if components[name] not in (None, 1.0):
            return False
    if components["category_f1_reward"] not in (None, 1.0):
        return False
    return components["word_budget_reward"] in (None, 0.0)
