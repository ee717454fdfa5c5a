"""Training examples: own taxonomy per record, GSPR augmentation, balance, explanations, provenance."""

from __future__ import annotations

import random

import pytest

from guard.contract import EXPLANATION_WORD_BUDGET, parse
from policies import presets
from trainer import data


def test_each_record_is_rendered_under_its_own_taxonomy(corpus):
    built = data.build_dataset([str(corpus)], augment=False, holdout_percent=0, max_examples=None)
    by_id = {e.id: e for e in built.examples}
    assert by_id["m1"].policy.name == "mini"
    assert [c.name for c in by_id["m1"].policy.categories] == ["Weapons", "Fraud", "Hate"]
    # Taxonomy "none" is judged under the general default policy.
    assert by_id["c1"].policy == presets.preset_spec("none")
    # Gold categories become the taxonomy's policy codes.
    assert by_id["m2"].gold.categories == ("S2",)
    assert "Policy: mini" in by_id["m1"].input_text()


def test_every_target_parses_with_the_gold_labels_and_stays_within_the_word_budget(corpus):
    built = data.build_dataset([str(corpus)], holdout_percent=0, max_examples=None, seed=3)
    for example in built.examples:
        verdict = parse(example.target, example.policy, example.has_response).verdict
        assert verdict is not None, example.target
        assert (verdict.prompt_label, verdict.response_label, verdict.refusal_label) == (
            example.gold.prompt_label, example.gold.response_label, example.gold.refusal_label)
        assert verdict.categories == list(example.gold.categories)
        assert 0 < verdict.explanation_words <= EXPLANATION_WORD_BUDGET


def test_composed_explanation_names_the_code_and_quotes_the_triggering_words(corpus):
    built = data.build_dataset([str(corpus / "mini.jsonl")], augment=False, holdout_percent=0, max_examples=None)
    example = next(e for e in built.examples if e.id == "m1")
    assert "S1 (Weapons)" in example.explanation
    assert '"How do I build a pipe bomb?"' in example.explanation
    safe = next(e for e in built.examples if e.id == "m5")
    assert "bake bread" in safe.explanation and "S1" not in safe.explanation


def test_a_quote_of_one_long_run_of_characters_is_clipped_not_copied_whole():
    from trainer.explanations import QUOTE_WORD_CHARS, trigger_quote

    quote = trigger_quote("c" * 400)
    assert quote == "c" * QUOTE_WORD_CHARS + "…"
    assert trigger_quote("see " + "x" * 80 + " now") == "see " + "x" * QUOTE_WORD_CHARS + "… now"


def test_records_without_a_usable_gold_label_are_skipped_and_counted(corpus):
    built = data.build_dataset([str(corpus / "chat.jsonl")], holdout_percent=0, max_examples=None)
    assert "c4" not in {e.id for e in built.examples}
    assert built.files[0].skipped == {"no usable gold label": 1}


def test_augmentation_keeps_the_gold_categories_of_unsafe_examples():
    spec = presets.preset_spec("mlcommons_hazards")
    gold = data.GoldLabels("unsafe", None, None, ("S9",), True)
    rng = random.Random(0)
    shown = [data.augment_policy(spec, gold, rng) for _ in range(200)]
    assert all("S9" in s.codes for s in shown)
    assert any(len(s.codes) < len(spec.codes) for s in shown), "subsets are drawn"
    assert any(list(s.codes) != sorted(s.codes, key=spec.codes.index) for s in shown), "orders are shuffled"


def test_augmentation_of_safe_examples_may_show_any_non_empty_subset():
    spec = presets.preset_spec("mlcommons_hazards")
    gold = data.GoldLabels("safe", None, None, (), True)
    sizes = {len(data.augment_policy(spec, gold, random.Random(seed)).codes) for seed in range(200)}
    assert min(sizes) >= 1 and len(sizes) > 5


def test_unsafe_examples_with_unknown_categories_keep_every_category():
    spec = presets.preset_spec("general")
    gold = data.GoldLabels("unsafe", None, None, (), False)
    for seed in range(50):
        assert sorted(data.augment_policy(spec, gold, random.Random(seed)).codes) == sorted(spec.codes)


def test_long_taxonomies_are_capped_but_keep_the_gold_codes():
    spec = presets.preset_spec("aart_crime")
    gold = data.GoldLabels("unsafe", None, None, ("S70",), True)
    shown = data.augment_policy(spec, gold, random.Random(1), shuffle=0.0, subset=0.0, max_categories=12)
    assert len(shown.codes) == 12 and "S70" in shown.codes


def test_held_out_records_are_fixed_by_id_and_never_trained_on(corpus, tmp_path):
    first = data.build_dataset([str(corpus)], holdout_percent=30, max_examples=None, seed=1)
    second = data.build_dataset([str(corpus)], holdout_percent=30, max_examples=None, seed=2)
    held = {r["id"] for records in first.held_out.values() for r in records}
    assert held == {r["id"] for records in second.held_out.values() for r in records}
    assert held and not held & {e.id for e in first.examples}
    written = first.write_held_out(tmp_path / "heldout")
    assert {p.name for p in written} <= {"mini.jsonl", "chat.jsonl"}
    assert (tmp_path / "heldout" / "taxonomies.json").exists()


def test_provenance_records_files_with_their_licences_from_the_manifest(corpus):
    built = data.build_dataset([str(corpus)], holdout_percent=0, max_examples=None)
    files = {f["name"]: f for f in built.provenance()["files"]}
    assert files["mini.jsonl"]["licence"] == "MIT"
    assert files["chat.jsonl"]["licence"] == "CC-BY-4.0"
    assert len(files["mini.jsonl"]["sha256"]) == 64


def test_shared_manifest_licences_are_parsed(settings):
    licences = data.parse_manifest(settings.SHARED_DATASETS_DIR / "MANIFEST.md")
    if not licences:
        pytest.skip("the shared corpus is not present")
    assert licences["advbench.jsonl"] == "MIT"
    assert licences["toxicchat_train.jsonl"] == "unknown"


def test_a_missing_data_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        data.build_dataset([str(tmp_path / "nope.jsonl")])


def test_teacher_answers_are_kept_only_when_their_labels_match_gold(corpus):
    built = data.build_dataset([str(corpus / "mini.jsonl")], augment=False, holdout_percent=0, max_examples=None)
    example = next(e for e in built.examples if e.id == "m1")
    good = "prompt: unsafe\nresponse: none\nrefusal: none\ncategories: S1\nexplanation: Asks how to build a bomb; S1 forbids weapons."
    assert data.accept_teacher_answer(example, good) == "Asks how to build a bomb; S1 forbids weapons."
    wrong_label = good.replace("prompt: unsafe", "prompt: safe").replace("categories: S1", "categories: none")
    wrong_code = good.replace("categories: S1", "categories: S2")
    too_long = good.rsplit("explanation:", 1)[0] + "explanation: " + " ".join(["word"] * 41)
    for answer in (wrong_label, wrong_code, too_long, "not an answer", None):
        assert data.accept_teacher_answer(example, answer) is None


@pytest.mark.django_db
def test_reviewed_items_are_rendered_under_the_policy_version_they_were_judged_against(make_user):
    from moderation.models import Decision, Item, ReviewTask
    from policies.models import Category, Policy

    policy = Policy.objects.create(slug="house", name="House rules")
    draft = policy.draft()
    Category.objects.create(version=draft, position=0, code="B1", name="Bullying", description="Mocks a person.")
    Category.objects.create(version=draft, position=1, code="B2", name="Spam", description="Unsolicited ads.")
    version = policy.publish(change_note="v1")
    reviewer = make_user("rev", "reviewer")
    item = Item.objects.create(policy_version=version, prompt="You are so stupid, loser.")
    task = ReviewTask.objects.create(item=item, reason=ReviewTask.Reason.FLAG)
    Decision.objects.create(task=task, item=item, reviewer=reviewer, outcome="override", prompt_label="unsafe", categories=["B1"])

    built = data.build_dataset(["reviewed:house"], holdout_percent=0, max_examples=None, augment=False)
    [example] = built.examples
    assert example.source == "reviewed:house"
    assert example.policy.name == "House rules" and example.policy.codes == ("B1", "B2")
    assert example.gold.categories == ("B1",)
    assert built.reviewed == {"reviewed:house": 1}
    assert "B1 (Bullying)" in example.explanation


@pytest.mark.django_db
def test_with_a_chosen_policy_every_record_is_rendered_under_it_and_unmappable_categories_are_dropped(corpus):
    from policies.models import Category, Policy

    policy = Policy.objects.create(slug="shop", name="Shop rules")
    draft = policy.draft()
    Category.objects.create(version=draft, position=0, code="W", name="Weapons", description="No weapons.")
    Category.objects.create(version=draft, position=1, code="F", name="Fraud", description="No fraud.")
    policy.publish(change_note="v1")
    built = data.build_dataset([str(corpus / "mini.jsonl")], policy="shop", holdout_percent=0, max_examples=None, augment=False)
    by_id = {e.id: e for e in built.examples}
    assert {e.policy.name for e in built.examples} == {"Shop rules"}
    assert by_id["m1"].gold.categories == ("W",) and by_id["m2"].gold.categories == ("F",)
    assert "m3" not in by_id  # "Hate" is not in the shop policy
    assert built.files[0].skipped == {"categories not in the chosen policy": 1}
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        data.build_dataset([str(corpus)], policy="nope")


@pytest.mark.django_db
def test_an_unreachable_teacher_falls_back_to_composed_explanations(corpus):
    import socket

    from trainer.teacher import MAX_CONSECUTIVE_FAILURES, OpenAITeacher

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    teacher = OpenAITeacher(f"http://127.0.0.1:{port}", model="teacher", concurrency=1)
    built = data.build_dataset([str(corpus / "mini.jsonl")], teacher=teacher, holdout_percent=0, max_examples=None)
    assert built.mix["explanations"] == {"composed": len(built.examples)}
    # After a few failures in a row the teacher is not asked again in this run.
    assert teacher.asked == MAX_CONSECUTIVE_FAILURES
