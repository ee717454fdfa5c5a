"""Report keys about the guard's judgement beyond F1: policy following, first-code bias, explanations, categories per file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from django.core.management import call_command

from evaluation import policy_following
from evaluation.harness import evaluate
from evaluation.metrics import explanation_stats, fixed_code_share
from evaluation.records import EvalRecord, LoadedFile
from evaluation.report import build_report
from guard.contract import CategorySpec, PolicySpec, Verdict


def _record(file: str, index: int, categories: tuple[str, ...] = ()) -> EvalRecord:
    return EvalRecord(file=file, line=index, id=f"{file}-{index}", prompt=f"text {index}", response=None,
                      prompt_label="unsafe" if categories else "safe", response_label=None, refusal_label=None,
                      categories=categories, taxonomy="t")


POLICY = PolicySpec(name="p", categories=tuple(CategorySpec(code=f"S{i}", name=f"c{i}") for i in range(1, 4)))


def _report(verdicts: list[Verdict], golds: list[list[str]], files: list[str]) -> dict:
    records = [_record(f, i, tuple(g)) for i, (f, g) in enumerate(zip(files, golds, strict=True))]
    loaded = [LoadedFile(name=name, path=Path(name), records=[r for r in records if r.file == name], total=1) for name in sorted(set(files))]
    return build_report(records, verdicts, [("t", g) for g in golds], loaded, model="m", mode="reason",
                        elapsed_seconds=1.0, policies=[POLICY] * len(records))


def test_a_model_that_answers_the_first_code_of_every_policy_shows_it_beside_golds_share():
    golds = [["S2"], ["S3"], ["S1"], ["S2"]]
    verdicts = [Verdict("unsafe", categories=["S1"], explanation=f"e{i}") for i in range(4)]
    first = _report(verdicts, golds, ["a.jsonl"] * 4)["first_code"]
    assert first["share"] == 100.0 and first["gold_share"] == 25.0 and first["with_codes"] == 4
    assert fixed_code_share(["S1", "S1"], [None, ["S2"]], [[], []])["share"] == 0.0


def test_a_model_that_answers_the_last_code_of_every_policy_shows_it_too():
    golds = [["S2"], ["S3"], ["S1"], ["S2"]]
    last = POLICY.codes[-1]
    verdicts = [Verdict("unsafe", categories=[last], explanation=f"e{i}") for i in range(4)]
    report = _report(verdicts, golds, ["a.jsonl"] * 4)
    assert report["last_code"]["share"] == 100.0 and report["last_code"]["gold_share"] == 25.0
    assert report["first_code"]["share"] == 0.0


def test_category_f1_is_reported_per_file():
    golds = [["S2"], ["S3"], ["S1"], ["S2"]]
    verdicts = [Verdict("unsafe", categories=["S2"]), Verdict("unsafe", categories=["S1"]),
                Verdict("unsafe", categories=["S1"]), Verdict("unsafe", categories=["S2"])]
    by_file = _report(verdicts, golds, ["a.jsonl", "a.jsonl", "b.jsonl", "b.jsonl"])["categories_by_file"]
    assert by_file["b.jsonl"]["micro_f1"] == 100.0 and by_file["b.jsonl"]["n"] == 2
    assert by_file["a.jsonl"]["micro_f1"] == 50.0


def test_one_sentence_shared_by_many_flagged_items_shows_as_a_low_distinct_share():
    verdicts = [Verdict("unsafe", explanation="The prompt seeks clearly harmful help that the policy forbids.") for _ in range(3)]
    verdicts.append(Verdict("unsafe", explanation="S2 applies: the prompt asks \"how to pick a lock\"."))
    verdicts.append(Verdict("safe", explanation="No category applies."))
    stats = _report(verdicts, [[]] * 5, ["a.jsonl"] * 5)["explanations"]
    assert stats["flagged"] == 4 and stats["distinct"] == 2 and stats["distinct_share"] == 50.0
    assert stats["mean_words"] == 10.0
    assert explanation_stats([])["distinct_share"] == 0.0


def test_evaluate_reports_the_new_keys_from_a_real_run(small_benchmark, tiny_model):
    report = evaluate([small_benchmark], tiny_model, mode="fast", batch_size=4)
    assert {"categories_by_file", "first_code", "explanations"} <= set(report)
    assert set(report["categories_by_file"]) == {"prompts.jsonl", "responses.jsonl"}
    json.dumps(report)


def test_policy_following_pairs_are_judged_under_both_policies(tiny_model, tmp_path):
    pairs = policy_following.load_pairs()[:3]
    small = tmp_path / "pairs.jsonl"
    small.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    seen: list = []

    def classify(requests, model):
        seen.extend(requests)
        return [Verdict("unsafe", categories=[pairs[int(r.tag.split(":")[0])]["code"]]) if r.tag.endswith("covering_policy")
                else Verdict("safe") for r in requests]

    result = policy_following.evaluate_policy_following(tiny_model, classify=classify, path=small, batch_size=2)
    assert result == {"n": 3, "pair_accuracy": 100.0, "code_accuracy": 100.0, "covering_accuracy": 100.0,
                      "other_accuracy": 100.0, "parse_failures": 0, "misses": []}
    assert len(seen) == 6 and seen[0].prompt == seen[1].prompt and seen[0].policy != seen[1].policy


@pytest.mark.django_db
def test_the_evaluate_command_judges_a_model_with_heads_by_its_logits_when_told(small_benchmark, tiny_model, tmp_path):
    from guard.backends.transformers_backend import TransformersBackend
    from guard.testing import fit_tiny_heads

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model, model_dir)
    fit_tiny_heads(TransformersBackend(model_dir, device="cpu"), model_dir)
    for flag, decider in (("--heads", "heads"), ("--no-heads", "logits")):
        out = tmp_path / f"{decider}.json"
        call_command("evaluate", "--data", str(small_benchmark), "--model", str(model_dir), "--out", str(out), "--limit", "2",
                     "--policy-following-pairs", "2", flag)
        assert set(json.loads(out.read_text())["decided_by"]) == {decider}


@pytest.mark.django_db
def test_the_evaluate_command_reports_policy_following(small_benchmark, tiny_model, tmp_path):
    out = tmp_path / "report.json"
    call_command("evaluate", "--data", str(small_benchmark), "--model", tiny_model, "--out", str(out), "--limit", "2",
                 "--policy-following-pairs", "3")
    report = json.loads(out.read_text())
    following = report["policy_following"]
    assert following["n"] == 3
    assert {"n", "pair_accuracy", "code_accuracy"} <= set(following)
    assert 0.0 <= following["pair_accuracy"] <= 100.0
    skipped = tmp_path / "skipped.json"
    call_command("evaluate", "--data", str(small_benchmark), "--model", tiny_model, "--out", str(skipped), "--limit", "2",
                 "--no-policy-following")
    assert "policy_following" not in json.loads(skipped.read_text())
