"""The harness's input side: files, records, sampling and policies (no model needed)."""

from __future__ import annotations

from collections import Counter

import pytest

from evaluation.harness import PolicyResolver
from evaluation.records import (
    EvaluationError,
    LoadedFile,
    expand_data_paths,
    load_data,
    read_jsonl,
    sample_records,
)
from evaluation.report import build_report
from guard.contract import Verdict
from tests.evaluation.conftest import record


def test_a_directory_means_its_jsonl_files_in_name_order(small_benchmark):
    assert [p.name for p in expand_data_paths([small_benchmark])] == ["prompts.jsonl", "responses.jsonl"]


def test_a_missing_data_path_is_an_error_naming_it(tmp_path):
    with pytest.raises(EvaluationError, match="nope.jsonl.*does not exist"):
        expand_data_paths([tmp_path / "nope.jsonl"])


def test_a_directory_without_jsonl_files_is_an_error(tmp_path):
    with pytest.raises(EvaluationError, match="holds no .jsonl files"):
        expand_data_paths([tmp_path])


def test_a_malformed_line_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "hi", "prompt_label": "safe"}\n{not json\n')
    with pytest.raises(EvaluationError, match=r"broken.jsonl:2: not valid JSON"):
        read_jsonl(path)


def test_an_unknown_label_value_is_an_error_not_a_silent_skip(make_jsonl):
    path = make_jsonl("labels.jsonl", [record("x", "hello", prompt_label="harmful")])
    with pytest.raises(EvaluationError, match=r"labels.jsonl:1: prompt_label 'harmful'"):
        read_jsonl(path)


def test_an_empty_prompt_is_an_error(make_jsonl):
    path = make_jsonl("empty.jsonl", [record("x", "  ")])
    with pytest.raises(EvaluationError, match="'prompt' must be a non-empty string"):
        read_jsonl(path)


def _mixed(n_unsafe: int, n_safe: int) -> list[dict]:
    return [record(f"u{i}", f"bad {i}", "unsafe") for i in range(n_unsafe)] + [
        record(f"s{i}", f"good {i}", "safe") for i in range(n_safe)
    ]


def test_limit_takes_a_label_stratified_sample(make_jsonl):
    records = read_jsonl(make_jsonl("mixed.jsonl", _mixed(80, 20)))
    sample = sample_records(records, 10, "mixed.jsonl")
    assert Counter(r.prompt_label for r in sample) == {"unsafe": 8, "safe": 2}


def test_limit_gives_every_label_at_least_one_record_when_it_can(make_jsonl):
    records = read_jsonl(make_jsonl("rare.jsonl", _mixed(97, 3)))
    sample = sample_records(records, 10, "rare.jsonl")
    assert Counter(r.prompt_label for r in sample) == {"unsafe": 9, "safe": 1}


def test_the_sample_depends_only_on_the_file_name_and_its_records(make_jsonl, tmp_path):
    first = load_data([make_jsonl("same.jsonl", _mixed(50, 50), tmp_path / "a")], limit=7)[0].records
    again = load_data([make_jsonl("same.jsonl", _mixed(50, 50), tmp_path / "b")], limit=7)[0].records
    assert [r.id for r in first] == [r.id for r in again]
    assert len(first) == 7
    # ... and is a shuffle, not the head of the file.
    assert [r.id for r in first] != [f"u{i}" for i in range(7)]


def test_limit_above_the_file_size_keeps_every_record(make_jsonl):
    loaded = load_data([make_jsonl("small.jsonl", _mixed(2, 1))], limit=50)[0]
    assert len(loaded.records) == 3 and loaded.total == 3


def test_a_per_file_limit_overrides_the_limit_for_that_file_only(make_jsonl, tmp_path):
    big = make_jsonl("big.jsonl", _mixed(30, 30), tmp_path)
    other = make_jsonl("other.jsonl", _mixed(30, 30), tmp_path)
    loaded = load_data([big, other], limit=5, file_limits={"big": None})
    assert [len(f.records) for f in loaded] == [60, 5]
    assert len(load_data([big, other], limit=5, file_limits={"other.jsonl": 9})[1].records) == 9


def test_a_per_file_limit_naming_no_data_file_is_an_error(make_jsonl, tmp_path):
    with pytest.raises(EvaluationError, match="names no data file: toxicchat"):
        load_data([make_jsonl("big.jsonl", _mixed(3, 3), tmp_path)], limit=5, file_limits={"toxicchat": 3})


def test_auto_policy_judges_each_record_under_its_taxonomy_from_the_file_beside_it(small_benchmark):
    resolver = PolicyResolver("auto")
    records = read_jsonl(small_benchmark / "prompts.jsonl")
    jbb = resolver.spec_for(records[0])
    assert jbb.name == "jbb_category"
    assert records[0].taxonomies_path == str(small_benchmark / "taxonomies.json")
    assert resolver.gold_codes(records[0]) == ("jbb_category", ["S3"])  # "Physical harm" is the 3rd jbb category
    # taxonomy "none" -> the general default policy, and no gold categories.
    assert resolver.spec_for(records[3]).name == "General default"
    assert resolver.gold_codes(records[3]) == ("none", [])


def test_a_preset_name_as_policy_judges_every_record_under_it(small_benchmark):
    resolver = PolicyResolver("mlcommons_hazards")
    records = read_jsonl(small_benchmark / "prompts.jsonl")
    assert {resolver.spec_for(r).name for r in records} == {"MLCommons hazards S1-S14 (Llama Guard 3)"}
    # jbb categories mean nothing under the MLCommons policy: not scored.
    assert resolver.gold_codes(records[0]) == ("jbb_category", [])


def test_a_preset_matching_the_records_taxonomy_keeps_category_scoring(small_benchmark):
    resolver = PolicyResolver("jbb_category")
    assert resolver.gold_codes(read_jsonl(small_benchmark / "prompts.jsonl")[0]) == ("jbb_category", ["S3"])


def test_an_unknown_policy_is_an_error_listing_the_choices(db):
    with pytest.raises(EvaluationError, match="unknown policy 'no-such-policy'.*general"):
        PolicyResolver("no-such-policy")


def test_a_database_policy_is_judged_by_its_latest_published_version(db):
    from policies.models import Category, Policy

    policy = Policy.objects.create(slug="shop", name="Shop rules")
    draft = policy.draft()
    Category.objects.create(version=draft, position=0, code="P1", name="Price gouging")
    policy.publish(change_note="v1")
    spec = PolicyResolver("shop").fixed
    assert spec is not None and spec.codes == ("P1",) and spec.name == "Shop rules"


def test_a_database_policy_without_a_published_version_is_an_error(db):
    from policies.models import Policy

    Policy.objects.create(slug="empty", name="Empty")
    with pytest.raises(EvaluationError, match="no published version"):
        PolicyResolver("empty")


def test_report_scores_a_parse_failure_once_per_task_as_wrong(small_benchmark):
    files = load_data([small_benchmark])
    records = [r for f in files for r in f.records]
    resolver = PolicyResolver("auto")
    ok = Verdict(prompt_label="unsafe", response_label="unsafe", refusal_label="compliance", explanation="one two three")
    failed = Verdict(prompt_label="unsafe", response_label="unsafe", parse_error="empty output")
    # p1..p4, r1..r3 ; r2 (gold prompt unsafe, response safe, refusal) fails to parse.
    verdicts = [
        Verdict(prompt_label="unsafe", categories=["S3"], explanation="a b"),
        Verdict(prompt_label="safe"),
        Verdict(prompt_label="unsafe", categories=["S3"]),
        Verdict(prompt_label="unsafe", categories=["S1"], explanation="x"),
        ok,
        failed,
        Verdict(prompt_label="safe", response_label="safe", refusal_label="compliance", explanation="fine"),
    ]
    report = build_report(records, verdicts, [resolver.gold_codes(r) for r in records], files, "m", "fast", 2.0)
    prompt = report["tasks"]["prompt"]
    # gold U S U S U U S vs pred U S U U U (fail->FN) S -> TP 3, FP 1, FN 1, TN 2
    assert (prompt["tp"], prompt["fp"], prompt["fn"], prompt["tn"], prompt["n"]) == (3, 1, 1, 2, 7)
    assert prompt["parse_failures"] == 1
    response = report["tasks"]["response"]
    # gold U S S vs pred U (fail->FP) S -> TP 1, FP 1, TN 1
    assert (response["tp"], response["fp"], response["tn"], response["parse_failures"]) == (1, 1, 1, 1)
    refusal = report["tasks"]["refusal"]
    # only r1 (compliance) and r2 (refusal, failed -> FN) carry a gold refusal label
    assert (refusal["n"], refusal["fn"], refusal["tn"], refusal["parse_failures"]) == (2, 1, 1, 1)
    assert report["files"]["prompts.jsonl"]["response"]["n"] == 0
    assert report["files"]["responses.jsonl"]["prompt"]["parse_failures"] == 1
    # categories: p1 gold S3 pred S3 ; p3 gold S2 pred S3 ; r1 gold S4 pred none
    assert report["categories"]["n"] == 3
    assert report["categories"]["per_category"]["jbb_category:S3"]["f1"] == 66.67
    assert report["parse_failures"] == 1
    assert report["items_per_second"] == 3.5
    # words over parsed verdicts: 2,0,0,1,3,1 -> mean 1.17, p90 3
    assert report["words_per_explanation"] == {"mean": 1.17, "p90": 3.0}


def test_files_with_the_same_name_in_two_folders_are_reported_apart(make_jsonl, tmp_path):
    a = make_jsonl("same.jsonl", _mixed(1, 1), tmp_path / "a")
    b = make_jsonl("same.jsonl", _mixed(1, 1), tmp_path / "b")
    assert [f.name for f in load_data([a, b])] == ["a/same.jsonl", "b/same.jsonl"]


def test_loaded_file_reports_its_size_before_sampling(make_jsonl):
    loaded: LoadedFile = load_data([make_jsonl("sized.jsonl", _mixed(30, 30))], limit=5)[0]
    assert (len(loaded.records), loaded.total) == (5, 60)


def test_data_without_records_is_an_error_before_any_model_is_loaded(make_jsonl):
    from evaluation.harness import evaluate

    empty = make_jsonl("empty.jsonl", [])
    with pytest.raises(EvaluationError, match="holds no records"):
        evaluate([empty], "no-such-model")
