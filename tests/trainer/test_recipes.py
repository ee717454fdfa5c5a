"""Each recipe runs a few real steps on CPU with the tiny Gemma 3 (same architecture and tokenizer)."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from tests.trainer.conftest import fast_settings
from trainer import hard_samples, recipes, rewards
from trainer.data import ANSWER_END, TRAINING_IDS_FILE

pytestmark = pytest.mark.slow


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_sft_loss_falls_and_saves_a_small_lora_adapter(corpus, tiny_model, tmp_path):
    settings = fast_settings(recipe="sft", data=[str(corpus / "mini.jsonl")], base=str(tiny_model),
                             out_dir=str(tmp_path / "sft"), max_steps=12, learning_rate=1e-2, max_examples=4)
    outcome = recipes.run(settings, log=lambda _: None)
    losses = [entry["loss"] for entry in outcome.history if "loss" in entry]
    assert len(losses) == 12
    assert mean(losses[-3:]) < mean(losses[:3])
    assert (outcome.model_dir / "adapter_config.json").exists()
    assert outcome.summary["model_bytes"] < 20_000_000
    assert outcome.summary["steps_per_second"] > 0
    saved = json.loads((outcome.out_dir / recipes.METRICS_FILE).read_text())
    assert saved["provenance"]["data"]["files"][0]["licence"] == "MIT"
    assert saved["provenance"]["recipe"] == "sft"
    # What it was trained on, id by id: calibration and evaluation leave these out.
    trained_ids = (outcome.out_dir / TRAINING_IDS_FILE).read_text().split()
    assert len(trained_ids) == 4 and len(set(trained_ids)) == 4


def test_sft_trains_only_on_the_answer(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    rows = [{"prompt": "<start_of_turn>user\nJudge this<end_of_turn>\n<start_of_turn>model\n",
             "completion": "prompt: safe" + ANSWER_END}]
    [tokenized], dropped = recipes.tokenize_sft(rows, tokenizer, max_length=512)
    answer = [t for t, m in zip(tokenized["input_ids"], tokenized["completion_mask"], strict=True) if m]
    assert tokenizer.decode(answer) == "prompt: safe" + ANSWER_END
    assert dropped == 0
    assert recipes.tokenize_sft(rows, tokenizer, max_length=5) == ([], 1)


@pytest.mark.parametrize("length", [8, 40])
def test_a_right_padded_batch_gives_the_same_logits_with_layer_masks_as_with_its_padding_mask(tiny_model, length):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(tiny_model))
    config.sliding_window = 16  # length 40 crosses the sliding window, 8 does not
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), config=config, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(10, 5000, (2, length), generator=generator)
    attention_mask = (torch.arange(length) < torch.tensor([[length], [length // 2]])).long()
    input_ids[attention_mask == 0] = 0
    with torch.no_grad():
        masked = model(input_ids=input_ids, attention_mask=attention_mask).logits
        inputs = recipes.right_padded_attention_masks({"input_ids": input_ids, "attention_mask": attention_mask}, model.config)
        assert isinstance(inputs["attention_mask"], dict)
        by_layer_type = model(**inputs).logits
    real = attention_mask.bool()
    assert torch.allclose(masked[real], by_layer_type[real], atol=1e-5)


def test_the_padding_of_random_batches_is_measured():
    assert recipes.real_token_share([10, 10], batch_size=2) == 1.0
    assert recipes.real_token_share([10, 5], batch_size=2) == 0.75
    assert recipes.real_token_share([10, 5], batch_size=1) == 1.0


def test_grpo_logs_every_reward_component(corpus, tiny_model, tmp_path):
    settings = fast_settings(recipe="grpo", data=[str(corpus / "mini.jsonl")], base=str(tiny_model),
                             out_dir=str(tmp_path / "grpo"), max_steps=2, learning_rate=1e-3, max_completion_length=16)
    outcome = recipes.run(settings, log=lambda _: None)
    assert [entry["step"] for entry in outcome.history] == [1, 2]
    for entry in outcome.history:
        # A random model writes no valid answer: the format and label rewards are computed (as 0) ...
        assert entry["rewards"]["format_reward"] == 0.0
        assert entry["rewards"]["prompt_label_reward"] == 0.0
        assert "category_f1_reward" in entry["rewards"]
        assert "reward" in entry
    names = outcome.summary["recipe"]["reward_functions"]
    assert names == [f.__name__ for f in rewards.REWARD_FUNCTIONS]


def test_full_fine_tuning_saves_a_whole_model_and_grpo_continues_an_sft_adapter(corpus, tiny_model, tmp_path):
    full = fast_settings(recipe="sft", data=[str(corpus / "mini.jsonl")], base=str(tiny_model), out_dir=str(tmp_path / "full"),
                         max_steps=1, full=True, max_examples=2)
    outcome = recipes.run(full, log=lambda _: None)
    assert outcome.model_dir.name == "model"
    assert (outcome.model_dir / "config.json").exists() and not (outcome.model_dir / "adapter_config.json").exists()

    sft = fast_settings(recipe="sft", data=[str(corpus / "mini.jsonl")], base=str(tiny_model), out_dir=str(tmp_path / "sft"),
                        max_steps=1, max_examples=2, lora_rank=2, gradient_checkpointing=True)
    adapter = recipes.run(sft, log=lambda _: None).model_dir
    grpo = fast_settings(recipe="grpo", data=[str(corpus / "mini.jsonl")], base=str(tiny_model), out_dir=str(tmp_path / "grpo"),
                         max_steps=1, init_adapter=str(adapter), max_completion_length=8)
    outcome = recipes.run(grpo, log=lambda _: None)
    assert json.loads((outcome.model_dir / "adapter_config.json").read_text())["r"] == 2
    assert outcome.provenance["init_adapter"] == str(adapter)


def test_hard_sample_pairs_keep_prompts_with_right_and_wrong_answers():
    from guard.contract import CategorySpec, PolicySpec
    from trainer.data import spec_to_json

    policy = spec_to_json(PolicySpec("p", (CategorySpec("S1", "Weapons"),)))
    base = {"policy": policy, "has_response": False, "gold_response": "", "gold_refusal": "", "categories_known": True}
    unsafe = {**base, "prompt": "A", "gold_prompt": "unsafe", "gold_categories": '["S1"]',
              "completion": "prompt: unsafe\nresponse: none\nrefusal: none\ncategories: S1\nexplanation: gold." + ANSWER_END}
    safe = {**base, "prompt": "B", "gold_prompt": "safe", "gold_categories": "[]", "completion": "x"}
    right = "prompt: unsafe\nresponse: none\nrefusal: none\ncategories: S1\nexplanation: Weapons."
    near = "prompt: unsafe\nresponse: none\nrefusal: none\ncategories: none\nexplanation: harmful."
    safe_right = "prompt: safe\nresponse: none\nrefusal: none\ncategories: none\nexplanation: fine."
    pairs, stats = hard_samples.build_hard_pairs([unsafe, safe], [[near, right, "junk"], [safe_right, safe_right]])
    assert stats == {"prompts": 2, "mixed": 1, "all_right": 1, "all_wrong": 0, "gold_fallback": 0}
    assert pairs == [{"prompt": "A", "chosen": right + ANSWER_END, "rejected": near + ANSWER_END}]
    # The hardest wrong answer (the one closest to right) is the rejected one.
    pairs, stats = hard_samples.build_hard_pairs([unsafe], [["junk", "junk"]])
    assert pairs == [] and stats["all_wrong"] == 1
    pairs, stats = hard_samples.build_hard_pairs([unsafe], [["junk", "junk"]], gold_fallback=True)
    assert pairs[0]["chosen"] == unsafe["completion"] and stats["gold_fallback"] == 1


def test_dpo_samples_from_the_current_model_builds_pairs_and_trains(corpus, tiny_model, tmp_path):
    # A random model is never right, so the gold answer stands in for "chosen"; rejected are its own samples.
    settings = fast_settings(recipe="dpo", data=[str(corpus / "mini.jsonl")], base=str(tiny_model),
                             out_dir=str(tmp_path / "dpo"), max_steps=2, learning_rate=1e-3, dpo_gold_fallback=True,
                             max_completion_length=12)
    outcome = recipes.run(settings, log=lambda _: None)
    hard = outcome.summary["recipe"]["hard_samples"]
    assert hard["prompts"] == 4 and hard["gold_fallback"] == 4 and outcome.summary["recipe"]["pairs"] == 4
    saved = json.loads((outcome.out_dir / recipes.DPO_PAIRS_FILE).read_text())
    assert all(p["chosen"] != p["rejected"] for p in saved["pairs"])
    losses = [entry["loss"] for entry in outcome.history if "loss" in entry]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)


def test_dpo_without_hard_samples_says_why(corpus, tiny_model, tmp_path):
    settings = fast_settings(recipe="dpo", data=[str(corpus / "mini.jsonl")], base=str(tiny_model),
                             out_dir=str(tmp_path / "dpo"), max_steps=1, max_completion_length=8, dpo_prompts=2)
    with pytest.raises(recipes.TrainingError, match="no hard samples"):
        recipes.run(settings, log=lambda _: None)


def test_train_command_continues_an_init_adapter(corpus, tiny_model, tmp_path, capsys):
    common = ["--data", str(corpus / "mini.jsonl"), "--base", str(tiny_model), "--max-steps", "2",
              "--max-examples", "4", "--batch-size", "2", "--max-text-tokens", "32", "--max-length", "384",
              "--holdout-percent", "0"]
    call_command("train", "--recipe", "sft", "--out", str(tmp_path / "first"), "--lora-rank", "4", *common)
    first = tmp_path / "first" / "adapter"
    assert json.loads((first / "adapter_config.json").read_text())["r"] == 4
    call_command("train", "--recipe", "sft", "--out", str(tmp_path / "second"), "--init", str(first), *common)
    metrics = json.loads((tmp_path / "second" / recipes.METRICS_FILE).read_text())
    assert metrics["provenance"]["init_adapter"] == str(first)
    # The continued adapter is still rank 4: the provenance says so, not the option defaults.
    assert metrics["provenance"]["hyperparameters"]["lora_rank"] == 4
    assert "sft: 2 steps" in capsys.readouterr().out


def test_train_command_rejects_a_base_that_is_not_a_local_model(corpus, tmp_path):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="does not exist"):
        call_command("train", "--recipe", "sft", "--data", str(corpus), "--base", str(tmp_path / "missing"),
                     "--out", str(tmp_path / "out"))


def test_lora_layers_adapts_only_the_top_decoder_layers(corpus, tiny_model, tmp_path):
    from safetensors import safe_open

    settings = fast_settings(recipe="sft", data=[str(corpus / "mini.jsonl")], base=str(tiny_model),
                             out_dir=str(tmp_path / "top"), max_steps=1, max_examples=2, lora_rank=2, lora_layers=1)
    outcome = recipes.run(settings, log=lambda _: None)
    total = json.loads((tiny_model / "config.json").read_text())["num_hidden_layers"]
    with safe_open(str(outcome.model_dir / "adapter_model.safetensors"), "pt") as weights:
        layers = {int(key.split(".layers.")[1].split(".")[0]) for key in weights.keys()}
    assert layers == {total - 1}
    assert json.loads((outcome.model_dir / "adapter_config.json").read_text())["layers_to_transform"] == [total - 1]


def test_lora_layers_must_not_be_negative():
    with pytest.raises(recipes.TrainingError, match="lora_layers"):
        recipes.TrainSettings(recipe="sft", data=["x"], out_dir="y", lora_layers=-1)


def test_a_resumed_run_keeps_the_curve_from_before_its_checkpoint(corpus, tiny_model, tmp_path):
    common = {"recipe": "sft", "data": [str(corpus / "mini.jsonl")], "base": str(tiny_model),
              "out_dir": str(tmp_path / "run"), "max_examples": 4, "lora_rank": 2, "save_steps": 2}
    recipes.run(fast_settings(**common, max_steps=2), log=lambda _: None)
    checkpoint = recipes.latest_checkpoint(tmp_path / "run")
    assert checkpoint is not None and checkpoint.endswith("checkpoint-2")
    outcome = recipes.run(fast_settings(**common, max_steps=3), resume_from_checkpoint=checkpoint, log=lambda _: None)
    saved = json.loads((outcome.out_dir / recipes.METRICS_FILE).read_text())
    assert [entry["step"] for entry in saved["history"]] == [1, 2, 3]
    assert outcome.summary["steps_per_second"] > 0


def test_a_time_budget_ends_training_early_and_still_saves_the_adapter(corpus, tiny_model, tmp_path):
    settings = fast_settings(recipe="sft", data=[str(corpus / "mini.jsonl")], base=str(tiny_model),
                             out_dir=str(tmp_path / "sft"), max_steps=10_000, max_minutes=0.0001, max_examples=4)
    outcome = recipes.run(settings, log=lambda _: None)
    assert outcome.steps == 1  # the budget (6 ms) is over after the first step
    assert outcome.summary["stopped_at_time_budget"] is True
    assert (outcome.model_dir / "adapter_config.json").exists()
    saved = json.loads((outcome.out_dir / recipes.METRICS_FILE).read_text())
    assert saved["provenance"]["hyperparameters"]["max_minutes"] == 0.0001


def test_a_negative_time_budget_is_refused():
    with pytest.raises(recipes.TrainingError, match="max_minutes"):
        recipes.TrainSettings(recipe="sft", data=["x"], out_dir="y", max_minutes=-1)
