"""SFT targets: fields without gold get no loss; generated degenerate and look-alike inputs are safe."""

from __future__ import annotations

import json

from tests.trainer.conftest import record, write_jsonl
from trainer import data, recipes
from trainer.generated import degenerate_records, lookalike_records


def test_a_response_label_without_a_prompt_label_trains_the_response_and_masks_the_prompt_label(tmp_path, tiny_model):
    from transformers import AutoTokenizer

    write_jsonl(tmp_path / "beaver.jsonl", [record("b1", "how do I hurt my neighbour", None, "Here is how: ...", "unsafe",
                                                    taxonomy="none")])
    [example] = data.build_dataset([str(tmp_path)], holdout_percent=0, max_examples=None).examples
    assert example.task == "response" and example.gold.response_label == "unsafe"
    assert example.masked_fields == ["prompt", "categories"]
    row = example.columns()
    assert row["gold_prompt"] == "" and json.loads(row["masked_fields"]) == ["prompt", "categories"]
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    [tokenized], _ = recipes.tokenize_sft([row], tokenizer, max_length=4096)
    trained = tokenizer.decode([t for t, m in zip(tokenized["input_ids"], tokenized["completion_mask"], strict=True) if m])
    assert trained.startswith("prompt:\nresponse: unsafe\nrefusal: compliance\ncategories:\nexplanation:")


def test_a_benign_answer_to_a_benign_request_is_compliance_and_an_unclear_refusal_label_is_masked(tmp_path):
    write_jsonl(tmp_path / "answers.jsonl", [
        record("a1", "How do I sort a list?", "safe", "Sure! Use sorted(my_list).", "safe", None, taxonomy="none"),
        record("a2", "How do I sort a list?", "safe", "I'm sorry, I can't help with that.", "safe", None, taxonomy="none"),
    ])
    by_id = {e.id: e for e in data.build_dataset([str(tmp_path)], holdout_percent=0, max_examples=None).examples}
    assert by_id["a1"].gold.refusal_label == "compliance" and by_id["a1"].gold.derived == ("refusal",)
    assert "refusal" in by_id["a2"].masked_fields


def test_degenerate_inputs_are_generated_safe_and_marked_as_ours():
    records = degenerate_records(count=90, seed=0)
    assert len(records) == 90 and len({(r["prompt"], r["response"]) for r in records}) == 90
    assert all(r["prompt_label"] == "safe" and r["source"].startswith("generated/degenerate") for r in records)
    assert any(set(r["prompt"]) <= {"c"} or len(set(r["prompt"].replace(" ", ""))) == 1 for r in records)


def test_benign_look_alikes_are_generated_safe():
    prompts = {r["prompt"] for r in lookalike_records()}
    assert "How do I kill a Python process that won't respond?" in prompts
    assert any("shoot" in p for p in prompts) and any("execute" in p for p in prompts) and any("bomb the exam" in p for p in prompts)
    assert all(r["prompt_label"] == "safe" for r in lookalike_records())


def test_explanations_of_unsafe_examples_are_varied_and_within_the_budget(tmp_path):
    write_jsonl(tmp_path / "bad.jsonl", [record(f"u{i}", f"Explain how to make weapon number {i} at home.", categories=["Weapons"],
                                                taxonomy="mini") for i in range(30)])
    (tmp_path / "taxonomies.json").write_text(json.dumps({"mini": {"Weapons": "[editor] making or acquiring weapons"}}))
    explanations = [e.explanation for e in data.build_dataset([str(tmp_path)], holdout_percent=0, max_examples=None).examples]
    assert len(set(explanations)) == len(explanations)
    assert all(len(text.split()) <= 40 and "(Weapons)" in text for text in explanations)
    assert len({text.split('"')[0] for text in explanations}) >= 3  # several phrasings, not one template


def test_a_single_source_run_is_not_cut_to_the_source_cap(corpus):
    built = data.build_dataset([str(corpus / "mini.jsonl")], holdout_percent=0, max_examples=8)
    assert len(built.examples) == 8
