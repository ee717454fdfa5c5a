"""The rule-based GRPO rewards: each a plain function with TRL's reward signature."""

from __future__ import annotations

import math

from guard.contract import CategorySpec, PolicySpec, Verdict, format_answer
from trainer import rewards
from trainer.data import spec_to_json

POLICY = PolicySpec(name="test", categories=(
    CategorySpec("S1", "Weapons", "making weapons"),
    CategorySpec("S2", "Fraud", "scams"),
    CategorySpec("S3", "Hate", "demeaning people"),
))


def row(prompt_label: str = "unsafe", response_label: str = "", refusal_label: str = "", categories: str = '["S1"]',
        has_response: bool = False, known: bool = True) -> dict:
    return {
        "policy": spec_to_json(POLICY), "has_response": has_response, "gold_prompt": prompt_label,
        "gold_response": response_label, "gold_refusal": refusal_label, "gold_categories": categories,
        "categories_known": known,
    }


def answer(prompt: str = "unsafe", response: str | None = None, refusal: str | None = None,
           categories: list[str] | None = None, explanation: str = "Violates S1 (Weapons).", has_response: bool = False) -> str:
    return format_answer(Verdict(prompt, response, refusal, categories if categories is not None else ["S1"], explanation), has_response)


def call(func, completions: list, rows: list[dict]) -> list:
    columns = {key: [r[key] for r in rows] for key in rows[0]}
    return func(prompts=["p"] * len(completions), completions=completions, **columns)


def test_format_reward_is_one_only_for_answers_that_parse_under_the_policy():
    completions = [answer(), "prompt: unsafe\nnonsense", answer(categories=["S9"])]
    assert call(rewards.format_reward, completions, [row()] * 3) == [1.0, 0.0, 0.0]


def test_prompt_label_reward_compares_with_gold_and_scores_unparseable_answers_zero():
    completions = [answer(), answer(prompt="safe", categories=[], explanation="Fine."), "garbage"]
    assert call(rewards.prompt_label_reward, completions, [row()] * 3) == [1.0, 0.0, 0.0]


def test_response_and_refusal_rewards_are_none_where_gold_has_no_such_label():
    assert call(rewards.response_label_reward, [answer()], [row()]) == [None]
    assert call(rewards.refusal_label_reward, [answer()], [row()]) == [None]


def test_response_and_refusal_rewards_score_conversations_with_a_response():
    gold = row(response_label="safe", refusal_label="refusal", has_response=True)
    right = answer(response="safe", refusal="refusal", has_response=True)
    wrong = answer(response="unsafe", refusal="compliance", has_response=True)
    assert call(rewards.response_label_reward, [right, wrong], [gold, gold]) == [1.0, 0.0]
    assert call(rewards.refusal_label_reward, [right, wrong], [gold, gold]) == [1.0, 0.0]


def test_category_f1_reward_gives_partial_credit():
    gold = row(categories='["S1", "S2"]')
    completions = [answer(categories=["S1", "S2"]), answer(categories=["S1"]), answer(categories=["S3"])]
    assert call(rewards.category_f1_reward, completions, [gold] * 3) == [1.0, 2 / 3, 0.0]


def test_category_f1_reward_rewards_naming_nothing_for_a_safe_prompt():
    gold = row(prompt_label="safe", categories="[]")
    completions = [answer(prompt="safe", categories=[], explanation="No category applies."), answer(prompt="unsafe")]
    assert call(rewards.category_f1_reward, completions, [gold] * 2) == [1.0, 0.0]


def test_category_f1_reward_is_none_when_gold_categories_are_unknown():
    assert call(rewards.category_f1_reward, [answer()], [row(categories="[]", known=False)]) == [None]


def test_word_budget_penalises_explanations_over_forty_words():
    short = answer(explanation="Violates S1.")
    long = answer(explanation=" ".join(["word"] * 60))
    very_long = answer(explanation=" ".join(["word"] * 200))
    result = call(rewards.word_budget_reward, [short, long, very_long, "garbage"], [row()] * 4)
    assert result[0] == 0.0
    assert math.isclose(result[1], -0.5)
    assert result[2] == -1.0
    assert result[3] is None


def test_conversational_completions_are_read_from_the_last_message():
    completion = [{"role": "assistant", "content": answer()}]
    assert call(rewards.format_reward, [completion], [row()]) == [1.0]


def test_score_reports_every_component_and_is_correct_needs_all_of_them():
    gold = row(categories='["S1"]')
    components = rewards.score(answer(), gold)
    assert set(components) == {f.__name__ for f in rewards.REWARD_FUNCTIONS}
    assert rewards.is_correct(answer(), gold)
    assert not rewards.is_correct(answer(categories=["S1", "S2"]), gold)
    assert not rewards.is_correct(answer(explanation=" ".join(["w"] * 41)), gold)
