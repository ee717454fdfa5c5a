"""Policy following: the operator's policy decides; the evaluation pairs are never trained on."""

from __future__ import annotations

import pytest

from evaluation import policy_following as pf_eval
from guard.contract import parse
from tests.trainer.test_mix import skewed  # noqa: F401 - fixture
from trainer import data, policy_following, policy_views


def test_a_violating_text_is_unsafe_under_a_policy_with_its_category_and_safe_once_the_category_is_removed():
    records = policy_following.training_records(60, seed=1)
    by_text: dict[str, list] = {}
    for rec in records:
        if rec.variant != "benign":
            by_text.setdefault(rec.id.rsplit("-", 1)[0], []).append(rec)
    for twins in by_text.values():
        covering = next(r for r in twins if r.variant == "covering")
        other = next((r for r in twins if r.variant in ("removed", "allowed")), None)
        if other is None:
            continue  # cut off at the end of the list
        assert covering.prompt == other.prompt
        assert covering.unsafe and covering.code in covering.policy.codes
        category = covering.policy.category(covering.code)
        assert category is not None and category.name not in [c.name for c in other.policy.categories]
        assert not other.unsafe and other.code is None
        if other.variant == "allowed":
            assert "Allowed on this service" in other.policy.description


def test_removing_a_records_violated_categories_makes_its_gold_label_safe(corpus):
    built = data.build_dataset([str(corpus / "mini.jsonl")], holdout_percent=0, max_examples=40, seed=2,
                               mix="policy_flip=0.3,cap=1")
    flips = [e for e in built.examples if e.source == data.GENERATED_POLICY_FLIP]
    assert flips
    originals = {e.id: e for e in data.build_dataset([str(corpus / "mini.jsonl")], holdout_percent=0,
                                                       max_examples=None, augment=False).examples}
    for flip in flips:
        source = originals[flip.id.removesuffix("~flip")]
        removed = {source.policy.category(code).name for code in source.gold.categories}
        assert removed.isdisjoint(c.name for c in flip.policy.categories)
        assert flip.gold.label == "safe" and flip.gold.categories == ()
        verdict = parse(flip.target, flip.policy, flip.has_response).verdict
        assert verdict is not None and verdict.prompt_label == "safe" and verdict.categories == []


def test_generated_policy_following_examples_join_the_mix_with_their_custom_policies(skewed):  # noqa: F811
    built = data.build_dataset([str(skewed)], holdout_percent=0, max_examples=200)
    generated = [e for e in built.examples if e.source == data.GENERATED_POLICY_FOLLOWING]
    assert {e.gold.label for e in generated} == {"safe", "unsafe"}
    custom_names = {c.name for c in policy_following.TRAIN_CATEGORIES}
    for example in generated:
        if example.gold.label == "unsafe":
            [code] = example.gold.categories
            assert example.policy.category(code).name in custom_names
            assert code in example.explanation


def test_the_violated_category_is_mostly_not_the_policys_first_code():
    records = [r for r in policy_following.training_records(400, seed=0) if r.unsafe]
    first = sum(1 for r in records if r.policy.codes[0] == r.code)
    assert first / len(records) < 0.4
    assert len({r.code[0] for r in records}) >= 3  # several code schemes


def test_corpus_codes_are_renumbered_in_shown_order_for_part_of_the_examples(corpus):
    renamed = [e for seed in range(4)
               for e in data.build_dataset([str(corpus / "mini.jsonl")], holdout_percent=0, max_examples=200, seed=seed,
                                           mix="cap=1").examples
               if e.source == "mini" and not e.policy.codes[0].startswith("S")]
    assert renamed
    for example in renamed:
        assert all(code in example.policy.codes for code in example.gold.categories)


def test_the_committed_evaluation_set_is_the_generators_output_with_60_to_100_pairs():
    committed = pf_eval.load_pairs()
    assert committed == [dict(sorted(p.items())) for p in pf_eval.build_pairs()]
    assert 60 <= len(committed) <= 100
    for pair in committed:
        covering = pf_eval._spec(pair["covering_policy"])
        other = pf_eval._spec(pair["other_policy"])
        assert covering.category(pair["code"]).name == pair["category"]
        assert pair["category"] not in [c.name for c in other.categories]


def test_the_evaluation_pairs_use_categories_and_texts_the_training_pool_does_not_have():
    trained = pf_eval.training_texts()
    for pair in pf_eval.load_pairs():
        assert pair["text"].casefold() not in trained
        assert pair["category"].casefold() not in trained


def test_no_evaluation_text_is_ever_in_a_built_training_set(skewed):  # noqa: F811
    eval_texts = {p["text"] for p in pf_eval.load_pairs()}
    for seed in range(3):
        built = data.build_dataset([str(skewed)], holdout_percent=0, max_examples=300, seed=seed,
                                   mix="policy_following=0.5")
        assert eval_texts.isdisjoint(e.prompt for e in built.examples)


def test_the_pair_score_needs_both_verdicts_right_and_the_code_named():
    from guard.contract import Verdict

    pairs = [{"code": "C2"}, {"code": "S1"}, {"code": "P3"}]
    covering = [Verdict("unsafe", categories=["C2"]), Verdict("unsafe", categories=["S2"]), Verdict("safe")]
    other = [Verdict("safe"), Verdict("safe"), Verdict("safe")]
    score = pf_eval.score(pairs, covering, other)
    assert score["n"] == 3
    assert score["pair_accuracy"] == round(200 / 3, 2)
    assert score["code_accuracy"] == round(100 / 3, 2)


def test_the_pair_score_lists_every_missed_pair_with_both_answers():
    from guard.contract import Verdict

    pairs = [{"id": "pf-a-0", "text": "hi", "code": "C2"}, {"id": "pf-b-0", "text": "yo", "code": "S1"},
             {"id": "pf-c-0", "text": "ok", "code": "P3"}]
    covering = [Verdict("unsafe", categories=["C2"]), Verdict("unsafe", categories=["S2", "S3"]), Verdict("unsafe", categories=["P3"])]
    other = [Verdict("safe"), Verdict("safe"), Verdict("unsafe", categories=["P1"])]
    misses = pf_eval.score(pairs, covering, other)["misses"]
    assert [(m["id"], m["covering"], m["other"]) for m in misses] == [("pf-b-0", "unsafe S2, S3", "safe"),
                                                                       ("pf-c-0", "unsafe P3", "unsafe P1")]



def _example(prompt_label: str, categories: tuple[str, ...] = (), unknown: tuple[str, ...] = ()):
    from guard.contract import CategorySpec, PolicySpec
    from trainer.examples import GoldLabels, TrainingExample

    policy = PolicySpec("attack set hazards", categories=(CategorySpec("S1", "Weapons"), CategorySpec("S2", "Fraud")))
    gold = GoldLabels(prompt_label=prompt_label, response_label=None, refusal_label=None, categories=categories,
                      categories_known=True, unknown=unknown)
    return TrainingExample(id="x", source="advbench", policy=policy, prompt="hello", response=None, gold=gold)


def test_an_all_safe_example_may_be_shown_under_another_taxonomy_with_its_gold_unchanged():
    import random

    from guard.contract import PolicySpec

    other = PolicySpec("General default", categories=())
    example = _example("safe")
    assert policy_views.cross_policy(example, [other], random.Random(0))
    assert example.policy is other and example.gold.prompt_label == "safe"


@pytest.mark.parametrize("gold", [("unsafe", ("S1",), ()), ("safe", (), ("prompt",))])
def test_an_unsafe_or_unlabelled_example_keeps_its_own_taxonomy(gold):
    import random

    from guard.contract import PolicySpec

    example = _example(*gold)
    before = example.policy
    assert not policy_views.cross_policy(example, [PolicySpec("General default", categories=())], random.Random(0))
    assert example.policy is before


def test_the_built_mix_records_how_many_safe_examples_changed_policy(corpus):
    built = data.build_dataset([str(corpus / "mini.jsonl"), str(corpus / "chat.jsonl")], holdout_percent=0,
                               max_examples=200, seed=0)
    assert built.mix["cross_policy_safe"] > 0
    presets_shown = {e.policy.name for e in built.examples if not e.gold.is_unsafe}
    assert "MLCommons hazards S1-S14 (Llama Guard 3)" in presets_shown or "General default" in presets_shown
