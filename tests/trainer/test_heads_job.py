"""The "Refit heads" job: the corpus and the reviews -> a candidate with the start adapter and new heads,
evaluated and registered like any candidate (tiny random model: plumbing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from guard.heads import heads_directory, load
from guard.models import ModelVersion
from guard.peak_reading import PeakHead
from trainer.heads import CATEGORY_TEMPLATES
from trainer.models import TrainingJob

pytestmark = pytest.mark.slow


def tiny_adapter(tiny_model: Path, directory: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer.model_loading import LINEAR_MODULES

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    config = LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=LINEAR_MODULES, task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(directory)
    return directory


@pytest.mark.django_db
def test_a_heads_job_registers_the_start_adapter_with_new_heads(corpus, tiny_model, tmp_path, settings):
    from trainer.tasks import JobProgress, _run

    settings.TRAINING_OUTPUT_DIR = tmp_path / "runs"
    adapter = tiny_adapter(tiny_model, tmp_path / "adapter")
    job = TrainingJob.objects.create(
        recipe="heads", data_sources=[str(corpus / "mini.jsonl"), str(corpus / "chat.jsonl")], base_model=str(tiny_model),
        init_adapter=str(adapter), hyperparameters={"eval_limit": 2}, output_dir=str(tmp_path / "runs" / "job"),
    )
    assert _run(job, None, JobProgress(job, 0)) == "succeeded"
    job.refresh_from_db()
    candidate = ModelVersion.objects.get(pk=job.candidate_id)
    out = Path(candidate.adapter_path)
    assert heads_directory(out) is not None and (out / "adapter_model.safetensors").is_file()
    assert candidate.metrics["report"]["decided_by"] == {"heads": candidate.metrics["report"]["n"]}
    # Both models judged the policy-following pairs (two of them here: TRAINER_EVAL_POLICY_FOLLOWING_PAIRS in conftest).
    assert candidate.metrics["report"]["policy_following"]["n"] == candidate.metrics["baseline"]["report"]["policy_following"]["n"] == 2
    assert job.summary["training"]["heads"]["licences"] == {"CC-BY-4.0": 5, "MIT": 12}
    assert "fit_heads" in candidate.provenance["command"]
    assert load(out).zero_shot.template in CATEGORY_TEMPLATES  # the wording chosen on the custom pool


@pytest.mark.django_db
def test_a_heads_job_with_tune_epochs_serves_tuned_layers_and_a_refit_without_them_keeps_them(corpus, tiny_model, tmp_path, settings):
    from trainer.tasks import JobProgress, _run

    settings.TRAINING_OUTPUT_DIR = tmp_path / "runs"
    adapter = tiny_adapter(tiny_model, tmp_path / "adapter")
    sources = [str(corpus / "mini.jsonl"), str(corpus / "chat.jsonl")]
    job = TrainingJob.objects.create(recipe="heads", data_sources=sources, base_model=str(tiny_model), init_adapter=str(adapter),
                                     hyperparameters={"eval_limit": 2, "tune_epochs": 1}, output_dir=str(tmp_path / "runs" / "tuned"))
    assert _run(job, None, JobProgress(job, 0)) == "succeeded"
    job.refresh_from_db()
    tuned = ModelVersion.objects.get(pk=job.candidate_id)
    heads = load(Path(tuned.adapter_path))
    assert heads.tuned is not None and heads.prompt.blocks == "tuned" and heads.layout.tuned == (1, 2)
    assert [entry["epoch"] for entry in heads.info["tasks"]["prompt"]["tuning"]["history"]] == [0, 1]
    assert tuned.metrics["report"]["decided_by"] == {"heads": tuned.metrics["report"]["n"]}
    # The corpus holds no long harmless answer to hide a request or a harmful answer in: no peak heads, logged.
    assert heads.peak is None and heads.response_peak is None
    heads.peak = PeakHead(coef=np.ones(heads.layout.hidden, dtype=np.float32), bias=0.0, threshold=2.0)
    heads.response_peak = PeakHead(coef=np.ones(heads.layout.hidden, dtype=np.float32), bias=0.0, threshold=3.0)
    heads.save(Path(tuned.adapter_path))

    again = TrainingJob.objects.create(recipe="heads", data_sources=sources, base_model=str(tiny_model),
                                       init_adapter=tuned.adapter_path, hyperparameters={"eval_limit": 2},
                                       output_dir=str(tmp_path / "runs" / "kept"))
    assert _run(again, None, JobProgress(again, 0)) == "succeeded"
    again.refresh_from_db()
    kept = load(Path(ModelVersion.objects.get(pk=again.candidate_id).adapter_path))
    assert kept.tuned is not None and kept.tuned.digest == heads.tuned.digest
    assert kept.prompt.kind == heads.prompt.kind and kept.prompt.threshold == heads.prompt.threshold
    # The peak heads read the kept layers: kept with them.
    assert kept.peak is not None and kept.peak.threshold == 2.0
    assert kept.response_peak is not None and kept.response_peak.threshold == 3.0


@pytest.mark.django_db
def test_a_heads_job_needs_the_model_whose_heads_it_refits():
    from trainer.forms import StartTrainingForm

    form = StartTrainingForm(data={"recipe": "heads", "data": [], "render_under": "auto", "base_model": "embedded",
                                   "init_adapter": "", "max_steps": "1", "max_examples": "10", "batch_size": "1",
                                   "eval_limit": "5"})
    form.fields["base_model"].choices = [("embedded", "embedded")]
    assert not form.is_valid()
    assert "keeps a model's weights" in form.errors["init_adapter"][0]


@pytest.mark.django_db
def test_a_new_backbone_tunes_its_start_models_layers_again_with_their_recipe(corpus, tiny_model, tmp_path):
    """A training job that changes the backbone (SFT/GRPO/DPO) re-tunes the start model's tuned layers with the same
    epochs, copies averaged and stored rank, not as one whole copy."""
    from guard.backends.transformers_backend import TransformersBackend
    from trainer.heads_job import refit_after_training
    from trainer.model_heads import fit_model_heads
    from trainer.tasks import JobProgress

    start = tiny_adapter(tiny_model, tmp_path / "start")
    backend = TransformersBackend(tiny_model, start, device="cpu", max_new_tokens=4, max_input_tokens=256)
    fit_model_heads(backend, corpus, start, log=lambda line: None, tune_epochs=1, tuned_rank=2, tuned_copies=2)
    trained = tiny_adapter(tiny_model, tmp_path / "trained")  # other LoRA weights: another backbone
    job = TrainingJob.objects.create(recipe="sft", data_sources=[str(corpus / "mini.jsonl"), str(corpus / "chat.jsonl")],
                                     base_model=str(tiny_model), init_adapter=str(start), output_dir=str(tmp_path / "job"))

    info = refit_after_training(job, trained, JobProgress(job, 0))

    old, new = load(start), load(trained)
    assert info is not None and new.fingerprint != old.fingerprint
    assert new.tuned is not None and new.tuned.rank == 2 and new.tuned.info["soup_of"] == 2
    assert new.tuned.info["epochs"] == old.tuned.info["epochs"] == 1
    assert new.prompt.blocks == "tuned" and new.prompt.info["tuning"]["soup_of"] == 2
