"""The report contract, from a real harness run with the tiny model, and the CLI."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from evaluation.harness import EvaluationError, evaluate
from tests.evaluation.conftest import build_small_benchmark

TASK_KEYS = {"f1": float, "precision": float, "recall": float, "n": int, "parse_failures": int}


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model) -> dict:
    folder = build_small_benchmark(tmp_path_factory.mktemp("contract") / "bench")
    calls: list[tuple[int, int]] = []
    report = evaluate([folder], tiny_model, mode="fast", batch_size=3, progress=lambda done, total: calls.append((done, total)))
    return {"report": report, "progress": calls, "model": tiny_model}


def assert_task(entry: dict) -> None:
    for key, kind in TASK_KEYS.items():
        assert isinstance(entry[key], kind), (key, entry[key])
    assert 0.0 <= entry["f1"] <= 100.0


def test_the_report_has_exactly_the_contracts_keys_and_types(run):
    report = run["report"]
    assert {"model", "mode", "n", "items_per_second", "words_per_explanation", "tasks", "files", "categories"} <= set(report)
    assert report["model"] == run["model"] and report["mode"] == "fast"
    assert isinstance(report["n"], int) and report["n"] == 7
    assert isinstance(report["items_per_second"], float) and report["items_per_second"] > 0
    assert set(report["words_per_explanation"]) >= {"mean", "p90"}
    assert all(isinstance(v, float) for v in report["words_per_explanation"].values())
    assert set(report["tasks"]) == {"prompt", "response", "refusal"}
    for entry in report["tasks"].values():
        assert_task(entry)
    categories = report["categories"]
    assert isinstance(categories["micro_f1"], float) and isinstance(categories["macro_f1"], float)
    for key, entry in categories["per_category"].items():
        taxonomy, _, code = key.partition(":")
        assert taxonomy and code
        assert isinstance(entry["f1"], float) and isinstance(entry["n"], int)


def test_every_file_is_reported_by_name_with_the_three_tasks(run):
    files = run["report"]["files"]
    assert set(files) == {"prompts.jsonl", "responses.jsonl"}
    for tasks in files.values():
        assert set(tasks) == {"prompt", "response", "refusal"}
        for entry in tasks.values():
            assert_task(entry)


def test_each_task_counts_the_records_carrying_its_gold_label(run):
    tasks = run["report"]["tasks"]
    assert (tasks["prompt"]["n"], tasks["response"]["n"], tasks["refusal"]["n"]) == (7, 3, 2)
    assert run["report"]["files"]["prompts.jsonl"]["response"]["n"] == 0
    # p1, p3 (prompts) and r1 carry jbb gold categories.
    assert run["report"]["categories"]["n"] == 3


def test_the_report_is_plain_json(run):
    assert json.loads(json.dumps(run["report"])) == run["report"]


def test_progress_is_reported_from_zero_to_all_records(run):
    assert run["progress"][0] == (0, 7)
    assert run["progress"][-1] == (7, 7)
    assert [done for done, _ in run["progress"]] == [0, 3, 6, 7]


def test_an_unknown_model_fails_before_any_record_is_judged(small_benchmark, tmp_path):
    from guard.backends.base import GuardError

    with pytest.raises(GuardError, match="unknown model"):
        evaluate([small_benchmark], str(tmp_path / "no-model"))


def test_an_unknown_mode_is_an_evaluation_error(small_benchmark, tiny_model):
    with pytest.raises(EvaluationError, match="unknown mode 'slow'"):
        evaluate([small_benchmark], tiny_model, mode="slow")


# ------------------------------------------------------------------ CLI


def test_cli_writes_the_report_and_prints_a_summary(small_benchmark, tiny_model, tmp_path, capsys):
    out = tmp_path / "report.json"
    call_command("evaluate", "--data", str(small_benchmark / "responses.jsonl"), "--model", tiny_model,
                 "--limit", "2", "--batch-size", "2", "--out", str(out))
    report = json.loads(out.read_text())
    assert report["n"] == 2 and report["limit"] == 2 and report["policy"] == "auto"
    assert list(report["files"]) == ["responses.jsonl"]
    printed = capsys.readouterr().out
    assert "items/s" in printed and f"report written to {out}" in printed


def test_cli_names_a_missing_data_path(tiny_model, tmp_path):
    with pytest.raises(CommandError, match="missing.jsonl.*does not exist"):
        call_command("evaluate", "--data", str(tmp_path / "missing.jsonl"), "--model", tiny_model, "--out", str(tmp_path / "r.json"))


def test_cli_names_an_unknown_model(small_benchmark, tmp_path, db):
    with pytest.raises(CommandError, match="--model 'no-such-model'.*unknown model"):
        call_command("evaluate", "--data", str(small_benchmark), "--model", "no-such-model", "--out", str(tmp_path / "r.json"))


def test_cli_names_an_unknown_policy(small_benchmark, tiny_model, tmp_path, db):
    with pytest.raises(CommandError, match="unknown policy 'nope'"):
        call_command("evaluate", "--data", str(small_benchmark), "--model", tiny_model, "--policy", "nope", "--out", str(tmp_path / "r.json"))


def test_cli_refuses_an_output_folder_that_does_not_exist(small_benchmark, tiny_model, tmp_path):
    with pytest.raises(CommandError, match="--out: directory .* does not exist"):
        call_command("evaluate", "--data", str(small_benchmark), "--model", tiny_model, "--out", str(tmp_path / "no" / "r.json"))


def test_cli_refuses_a_limit_below_one(small_benchmark, tiny_model, tmp_path):
    with pytest.raises(CommandError, match="limit must be at least 1"):
        call_command("evaluate", "--data", str(small_benchmark), "--model", tiny_model, "--limit", "0", "--out", str(tmp_path / "r.json"))


def test_cli_refuses_a_per_file_limit_that_is_not_file_equals_number(small_benchmark, tiny_model, tmp_path):
    with pytest.raises(CommandError, match="expected FILE=N or FILE=all"):
        call_command("evaluate", "--data", str(small_benchmark), "--model", tiny_model, "--limit-for", "prompts",
                     "--out", str(tmp_path / "r.json"))
    with pytest.raises(CommandError, match="N must be a whole number or 'all'"):
        call_command("evaluate", "--data", str(small_benchmark), "--model", tiny_model, "--limit-for", "prompts=many",
                     "--out", str(tmp_path / "r.json"))


def test_the_summary_names_every_missed_policy_following_pair(run):
    from evaluation.report import format_summary

    report = {**run["report"], "policy_following": {"n": 72, "pair_accuracy": 98.61, "code_accuracy": 100.0, "misses": [
        {"id": "pf-self_promotion-0", "text": "Subscribe to my channel!", "covering": "safe", "other": "safe"}]}}
    assert "  missed pf-self_promotion-0: covering -> safe, other -> safe | Subscribe to my channel!" in format_summary(report)
