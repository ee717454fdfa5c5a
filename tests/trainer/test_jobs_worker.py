"""A training job on a real gpu-train worker: cancel through the UI, resume from the checkpoint, finish
with an evaluated, registered candidate."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from guard.models import ModelVersion
from tests.conftest import wait_for
from trainer.models import TrainingJob

pytestmark = [pytest.mark.worker, pytest.mark.slow]

DATA_FILE = "jbb_behaviors.jsonl"


def job_form(tiny_model: Path, steps: int) -> dict:
    return {
        "recipe": "sft", "data": [DATA_FILE], "render_under": "auto", "base_model": str(tiny_model),
        "init_adapter": "", "max_steps": str(steps), "lora_rank": "2", "max_examples": "6", "batch_size": "1",
        "eval_limit": "2", "learning_rate": "0.001",
    }


def fetch(job: TrainingJob) -> TrainingJob:
    job.refresh_from_db()
    return job


def test_a_running_job_is_cancelled_from_the_ui_and_resumed_from_its_checkpoint(start_worker, client, make_user, tiny_model, tmp_path):
    if not (settings.SHARED_DATASETS_DIR / DATA_FILE).exists():
        pytest.skip("the shared corpus is not present")
    worker = start_worker(queues="gpu-train", extra_env={"TRAINING_OUTPUT_DIR": str(tmp_path / "runs")})
    client.force_login(make_user("editor", "policy_editor"))
    assert client.post("/training/new", job_form(tiny_model, steps=12)).status_code == 302
    job = TrainingJob.objects.get()

    wait_for(lambda: fetch(job).step >= 2, timeout=180, message=f"two steps\n{worker.output()[-3000:]}")
    response = client.post(f"/training/{job.pk}/cancel", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and b'data-status="cancelling"' in response.content
    wait_for(lambda: fetch(job).status == "cancelled", timeout=120, message=f"cancelled\n{worker.output()[-3000:]}")
    stopped_at = job.step
    assert 2 <= stopped_at < 12
    assert Path(job.checkpoint_path).name == f"checkpoint-{stopped_at}"
    assert (Path(job.checkpoint_path) / "adapter_model.safetensors").exists()
    assert job.candidate is None

    page = client.get(f"/training/{job.pk}/").content.decode()
    assert "Resume from checkpoint" in page
    assert client.post(f"/training/{job.pk}/resume").status_code == 302
    wait_for(lambda: fetch(job).status in ("succeeded", "failed"), timeout=300, message=f"finished\n{worker.output()[-3000:]}")
    assert job.status == "succeeded", job.error
    assert job.step == 12 and job.attempts == 2
    assert f"resuming from {job.output_dir}/checkpoints/checkpoint-{stopped_at}" in job.log_tail
    steps = [m["step"] for m in job.metrics]
    assert steps == list(range(1, 13)), "every step once: the resumed run continued, not restarted"
    assert job.data_mix["total"] == 6

    candidate = ModelVersion.objects.get(pk=job.candidate_id)
    assert candidate.status == "candidate" and Path(candidate.adapter_path, "adapter_config.json").exists()
    assert candidate.provenance["job"] == job.pk
    assert candidate.provenance["data"]["files"][0]["licence"] == "MIT"
    evaluation = job.summary["evaluation"]
    assert evaluation["files"] == [DATA_FILE, "guardsite_eval.jsonl"]  # held-out records and the shipped set
    if "report" in candidate.metrics:
        assert candidate.metrics["report"]["files"][DATA_FILE]["prompt"]["n"] == 2
        assert candidate.metrics["baseline"]["model"] == "embedded"
    else:
        pytest.fail(f"the candidate was not evaluated: {evaluation}")
