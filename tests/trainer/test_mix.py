"""The training mix: tasks, labels and sources in explicit proportions, and the table that shows them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainer.conftest import record, write_jsonl
from trainer import data
from trainer.mix import MixSpec, format_table, summary

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def skewed(tmp_path) -> Path:
    """Prompt-heavy, unsafe-heavy data with a few response and refusal records, in five files."""
    root = tmp_path / "skewed"
    root.mkdir()
    (root / "taxonomies.json").write_text(json.dumps({"mini": {"Weapons": "w", "Fraud": "f", "Hate": "h"}}))
    write_jsonl(root / "attacks.jsonl", [record(f"a{i}", f"how to build weapon {i}", categories=["Weapons"]) for i in range(300)])
    write_jsonl(root / "chat.jsonl", [record(f"c{i}", f"hello friend {i}", prompt_label="safe") for i in range(80)]
                + [record(f"cu{i}", f"scam people {i}", categories=["Fraud"]) for i in range(20)])
    write_jsonl(root / "answers.jsonl", [record(f"r{i}", f"question {i}", "safe", f"answer {i}", "safe", None) for i in range(60)]
                + [record(f"ru{i}", f"bad question {i}", "unsafe", f"harmful answer {i}", "unsafe", None, ["Fraud"])
                   for i in range(60)])
    write_jsonl(root / "refusals.jsonl", [record(f"f{i}", f"make a bomb {i}", "unsafe", "I can't help with that.", "safe",
                                                 "refusal", ["Weapons"]) for i in range(60)]
                + [record(f"fc{i}", f"bake bread {i}", "safe", f"Mix flour {i}", "safe", "compliance") for i in range(60)])
    write_jsonl(root / "more_refusals.jsonl", [record(f"g{i}", f"steal a car {i}", "unsafe", "Sorry, no.", "safe", "refusal",
                                                      ["Fraud"]) for i in range(60)])
    return root


def realised(built: data.BuiltData) -> dict:
    return summary(built.mix["table"])


def test_each_task_keeps_its_positive_label_between_40_and_60_percent(skewed):
    built = data.build_dataset([str(skewed)], holdout_percent=0, max_examples=200)
    tasks = realised(built)["tasks"]
    assert set(tasks) == {"prompt", "response", "refusal"}
    for task, entry in tasks.items():
        assert 0.4 <= entry["positive_share"] <= 0.6, (task, entry)


def test_response_and_refusal_tasks_each_get_at_least_a_fifth_of_the_examples(skewed):
    built = data.build_dataset([str(skewed)], holdout_percent=0, max_examples=200)
    tasks = realised(built)["tasks"]
    assert tasks["response"]["share"] >= 0.2 and tasks["refusal"]["share"] >= 0.2


def test_no_source_takes_more_than_its_cap_of_the_budget(skewed):
    built = data.build_dataset([str(skewed)], holdout_percent=0, max_examples=200, mix="cap=0.25")
    sources = realised(built)["sources"]
    assert max(entry["n"] for entry in sources.values()) <= 50


def test_a_source_weight_of_zero_leaves_the_source_out_and_a_higher_weight_draws_more(skewed):
    left_out = data.build_dataset([str(skewed)], holdout_percent=0, max_examples=200, mix="source.more_refusals=0")
    assert "more_refusals" not in realised(left_out)["sources"]
    even = realised(data.build_dataset([str(skewed)], holdout_percent=0, max_examples=120, mix="cap=1"))["sources"]
    heavy = realised(data.build_dataset([str(skewed)], holdout_percent=0, max_examples=120,
                                        mix="cap=1,source.more_refusals=3"))["sources"]
    assert heavy["more_refusals"]["n"] > even["more_refusals"]["n"]


def test_task_shares_are_mixture_weights(skewed):
    built = data.build_dataset([str(skewed)], holdout_percent=0, max_examples=200,
                               mix="task.prompt=0.2,task.response=0.4,task.refusal=0.4,cap=1,policy_following=0,policy_flip=0")
    tasks = realised(built)["tasks"]
    assert tasks["prompt"]["n"] == 40 and tasks["response"]["n"] == 80 and tasks["refusal"]["n"] == 80


def test_the_realised_table_is_logged_and_recorded_per_task_label_and_source(skewed):
    lines: list[str] = []
    built = data.build_dataset([str(skewed)], holdout_percent=0, max_examples=200, log=lines.append)
    table = built.mix["table"]
    assert sum(n for labels in table.values() for sources in labels.values() for n in sources.values()) == len(built.examples)
    assert table["refusal"]["refusal"]["refusals"] > 0
    assert any("realised mix" in line and "refu:refusa" in line for line in lines)
    assert "tasks: prompt" in format_table(table)
    assert built.mix["spec"]["source_cap"] == 0.25


def test_mix_text_is_parsed_and_a_bad_item_is_a_clear_error():
    spec = MixSpec.parse("task.prompt=0.4,positive.refusal=0.45,source.davidson_hate_offensive=0.5,cap=0.2")
    assert spec.task_shares["prompt"] == 0.4 and spec.positive_share["refusal"] == 0.45
    assert spec.weight("davidson_hate_offensive") == 0.5 and spec.weight("other") == 1.0 and spec.source_cap == 0.2
    for bad in ("task.prompt", "colour=1", "cap=2", "positive.prompt=1.5", "task.prompt=x"):
        with pytest.raises(ValueError, match="mix item"):
            MixSpec.parse(bad)


def test_train_refuses_a_bad_mix_before_loading_anything(tmp_path, corpus):
    from trainer.settings import TrainingError, TrainSettings

    with pytest.raises(TrainingError, match="mix item"):
        TrainSettings(recipe="sft", data=[str(corpus)], out_dir=str(tmp_path), mix="weights=1")


@pytest.mark.slow
def test_the_default_mix_of_the_shared_corpora_is_balanced_capped_and_covers_every_task(tmp_path, settings):
    """The builder on the real splits (scripts/build_guard_data.py) with the shipped recipe's budget and weights."""
    if not (settings.SHARED_DATASETS_DIR / "MANIFEST.md").exists():
        pytest.skip("the shared corpus is not present")
    done = subprocess.run([sys.executable, "scripts/build_guard_data.py", "--out", str(tmp_path / "data"),
                           "--source", str(settings.SHARED_DATASETS_DIR)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    lines: list[str] = []
    built = data.build_dataset([str(tmp_path / "data" / "train")], holdout_percent=0, max_examples=12000, log=lines.append)
    info = realised(built)
    assert info["total"] == 12000
    for task, entry in info["tasks"].items():
        assert 0.4 <= entry["positive_share"] <= 0.6, (task, entry)
    assert info["tasks"]["response"]["share"] >= 0.2 and info["tasks"]["refusal"]["share"] >= 0.2
    assert max(entry["share"] for entry in info["sources"].values()) <= 0.25
    second_corpus = {"alpaca_eval", "arena_hard", "coconot", "davidson_hate_offensive", "dices", "gr_beavertails_test",
                     "gr_saferlhf_test", "gsm8k_sample", "harmfulqa", "rbr_gold", "self_instruct_seed",
                     "toxicchat_train_extra", "toxigen_statements"}
    assert second_corpus <= set(info["sources"])
    assert {"generated_degenerate", "generated_lookalike", "generated/policy_following"} <= set(info["sources"])
    print("\n".join(lines))
