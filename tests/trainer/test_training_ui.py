"""Training pages without a worker: the form, permissions, bad input, cancel/resume transitions, progress."""

from __future__ import annotations

import pytest
from django.conf import settings

from policies.models import Policy
from trainer.models import TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def policy() -> Policy:
    return Policy.objects.create(slug="house", name="House")


def shared_file() -> str:
    files = sorted(p.name for p in settings.SHARED_DATASETS_DIR.glob("*.jsonl"))
    if not files:
        pytest.skip("the shared corpus is not present")
    return files[0]


def test_a_retrain_from_a_policy_page_offers_its_reviewed_items(client_as, policy):
    page = client_as("policy_editor").get("/training/new?policy=house")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Reviewed items of this policy" in text and 'value="house"' in text
    assert "embedded Gemma 3 270M" in text


def test_training_new_without_a_policy_offers_each_policys_reviewed_items(client_as, policy, make_user):
    both_labels_reviewed(policy, make_user)
    Policy.objects.create(slug="kids", name="Kids")
    text = client_as("policy_editor").get("/training/new").content.decode()
    source = text[text.index('id="reviewed-source"'):text.index("</label>", text.index('id="reviewed-source"'))]
    assert 'name="reviewed"' in source and 'name="policy"' in source
    assert source.index("house (2 reviewed)") < source.index("kids (0 reviewed)")  # the policy with reviewed items first


def test_reviewed_items_without_a_chosen_policy_are_refused_saying_to_choose_one(client_as, policy):
    response = client_as("policy_editor").post("/training/new", {"recipe": "sft", "reviewed": "on", "policy": "", "render_under": "auto",
                                                                  "base_model": "embedded", "max_steps": 1, "lora_rank": 8, "max_examples": 10,
                                                                  "batch_size": 1, "eval_limit": 1})
    assert response.status_code == 400 and "Reviewed items need a policy: choose whose reviewed items to train on." in response.content.decode()


def test_an_unknown_policy_is_a_404_with_a_message(client_as):
    page = client_as("policy_editor").get("/training/new?policy=nope")
    assert page.status_code == 404 and b"Unknown policy nope" in page.content


def test_viewers_and_reviewers_cannot_start_training(client_as):
    assert client_as("viewer").get("/training/new").status_code == 403
    assert client_as("reviewer").post("/training/new", {}).status_code == 403
    assert client_as("viewer").get("/training/").status_code == 200


def test_bad_input_is_a_400_that_names_each_problem(client_as):
    response = client_as("policy_editor").post("/training/new", {"recipe": "magic", "max_steps": "0", "base_model": "/etc"})
    assert response.status_code == 400
    text = response.content.decode()
    assert "Select a valid choice. magic" in text
    assert "Choose at least one data source." in text
    assert "Ensure this value is greater than or equal to 1." in text
    assert not TrainingJob.objects.exists()


def test_starting_a_job_records_sources_base_and_hyperparameters(client_as, policy):
    name = shared_file()
    response = client_as("policy_editor").post("/training/new", {
        "recipe": "grpo", "data": [name], "reviewed": "on", "policy": "house", "render_under": "auto",
        "base_model": "embedded", "init_adapter": "", "max_steps": "7", "lora_rank": "4", "max_examples": "50",
        "batch_size": "2", "eval_limit": "5",
    })
    job = TrainingJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/training/{job.pk}/"
    assert job.status == "queued" and job.recipe == "grpo" and job.total_steps == 7
    assert job.data_sources == [str(settings.SHARED_DATASETS_DIR / name), "reviewed:house"]
    assert job.hyperparameters == {"max_steps": 7, "lora_rank": 4, "full": False, "max_examples": 50, "batch_size": 2, "eval_limit": 5}
    assert job.policy == "auto" and job.base_model == "embedded"


def test_cancelling_a_queued_job_cancels_it_at_once_and_it_can_be_resumed(client_as, policy):
    job = TrainingJob.objects.create(recipe="sft", data_sources=["x.jsonl"], total_steps=5)
    client = client_as("policy_editor")
    assert client.post(f"/training/{job.pk}/cancel").status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert client.post(f"/training/{job.pk}/cancel").status_code == 409
    response = client.post(f"/training/{job.pk}/resume", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and b'data-status="queued"' in response.content
    job.refresh_from_db()
    assert job.status == "queued"
    assert client.post(f"/training/{job.pk}/resume").status_code == 409


def test_cancelling_a_running_job_asks_the_trainer_to_stop(client_as):
    job = TrainingJob.objects.create(recipe="sft", data_sources=["x.jsonl"], status="running", total_steps=5)
    assert client_as("policy_editor").post(f"/training/{job.pk}/cancel").status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelling"


def test_progress_shows_steps_and_the_loss_and_reward_curves(client_as):
    metrics = [{"step": 1, "loss": 2.0, "reward": 0.5, "rewards": {"format_reward": 1.0, "prompt_label_reward": 0.0}},
               {"step": 2, "loss": 1.5, "reward": 0.8, "rewards": {"format_reward": 1.0, "prompt_label_reward": 0.5}}]
    job = TrainingJob.objects.create(recipe="grpo", data_sources=["x.jsonl"], status="running", step=2, total_steps=10,
                                     metrics=metrics, log_tail="step 2 · loss 1.5")
    text = client_as("viewer").get(f"/training/{job.pk}/progress").content.decode()
    assert 'hx-trigger="every 1s"' in text and "step 2/10" in text
    assert 'data-series="loss"' in text and 'data-series="format"' in text and 'data-series="prompt_label"' in text
    assert "Cancel" not in text  # viewers do not control jobs
    job.status = "succeeded"
    job.save()
    assert "hx-trigger" not in client_as("viewer").get(f"/training/{job.pk}/progress").content.decode()


def test_a_cancelling_job_whose_worker_is_gone_can_be_cancelled_for_good(client_as):
    from datetime import timedelta

    from django.utils import timezone

    job = TrainingJob.objects.create(recipe="sft", data_sources=["x.jsonl"], status="cancelling", total_steps=5)
    client = client_as("policy_editor")
    assert client.post(f"/training/{job.pk}/cancel").status_code == 409  # still fresh: wait for the worker
    TrainingJob.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    assert "Cancel without the worker" in client.get(f"/training/{job.pk}/").content.decode()
    assert client.post(f"/training/{job.pk}/cancel").status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled" and job.can_resume


def test_an_init_adapter_trained_on_another_base_is_refused(client_as, tmp_path):
    import json

    from guard.models import ModelVersion

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "other-base"), "r": 8}))
    ModelVersion.objects.create(name="old-adapter", adapter_path=str(adapter))
    response = client_as("policy_editor").post("/training/new", {
        "recipe": "sft", "data": [shared_file()], "render_under": "auto", "base_model": "embedded",
        "init_adapter": "old-adapter", "max_steps": "5", "lora_rank": "8", "max_examples": "10", "batch_size": "1",
        "eval_limit": "5",
    })
    assert response.status_code == 400
    assert f"This adapter was trained on {tmp_path / 'other-base'}, not on the chosen base model." in response.content.decode()


def both_labels_reviewed(policy: Policy, make_user) -> None:  # noqa: ANN001 - the fixture
    reviewer = make_user("rev", "reviewer")
    review(policy, reviewer, "How do I build a pipe bomb?", "unsafe")
    review(policy, reviewer, "Banana bread recipe?", "safe")


def continued_adapter(tmp_path, name: str = "guardsite-guard-270m", status: str = "production"):
    """A registered LoRA adapter of rank 16 on the top 8 layers of the embedded base."""
    import json

    from guard.models import ModelVersion

    adapter = tmp_path / name
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "embedded", "r": 16,
                                                             "layers_to_transform": list(range(10, 18))}))
    return ModelVersion.objects.create(name=name, adapter_path=str(adapter), status=status)


def test_the_form_offers_production_first_with_the_shape_a_continued_run_keeps(client_as, tmp_path):
    continued_adapter(tmp_path, "older", status="retired")
    continued_adapter(tmp_path)
    text = client_as("policy_editor").get("/training/new").content.decode()
    production = text.index("production: guardsite-guard-270m (production, LoRA r=16 on the top 8 layers)")
    assert production < text.index("older (retired")
    assert "a continued adapter keeps its own" in text


def test_continuing_an_adapter_records_its_rank_and_layers_not_the_form_fields(client_as, policy, tmp_path, make_user):
    continued_adapter(tmp_path)
    both_labels_reviewed(policy, make_user)
    response = client_as("policy_editor").post("/training/new", {
        "recipe": "sft", "reviewed": "on", "policy": "house", "render_under": "auto", "base_model": "embedded",
        "init_adapter": "guardsite-guard-270m", "max_steps": "1", "lora_rank": "8", "lora_layers": "1",
        "max_examples": "10", "batch_size": "1", "eval_limit": "5",
    })
    assert response.status_code == 302
    job = TrainingJob.objects.get()
    assert (job.hyperparameters["lora_rank"], job.hyperparameters["lora_layers"]) == (16, 8)
    assert job.hyperparameters["lora_shape_from"] == "start adapter"
    assert "--lora-rank" not in __import__("trainer.tasks", fromlist=["cli_command"]).cli_command(job)


def test_continuing_an_adapter_needs_no_rank_in_the_form(client_as, policy, tmp_path, make_user):
    continued_adapter(tmp_path)
    both_labels_reviewed(policy, make_user)
    response = client_as("policy_editor").post("/training/new", {
        "recipe": "sft", "reviewed": "on", "policy": "house", "render_under": "auto", "base_model": "embedded",
        "init_adapter": "guardsite-guard-270m", "max_steps": "1", "max_examples": "10", "batch_size": "1", "eval_limit": "5",
    })
    assert response.status_code == 302  # the disabled rank field sends nothing
    assert TrainingJob.objects.get().hyperparameters["lora_rank"] == 16


def test_a_fresh_adapter_needs_a_rank(client_as, policy):
    response = client_as("policy_editor").post("/training/new", {
        "recipe": "sft", "reviewed": "on", "policy": "house", "render_under": "auto", "base_model": "embedded",
        "init_adapter": "", "max_steps": "1", "max_examples": "10", "batch_size": "1", "eval_limit": "5",
    })
    assert response.status_code == 400
    assert "A fresh LoRA adapter needs a rank" in response.content.decode()


def test_a_queued_job_without_a_live_gpu_train_worker_says_nothing_will_start_it(client_as):
    job = TrainingJob.objects.create(recipe="sft", data_sources=["x.jsonl"], total_steps=5)
    text = client_as("viewer").get(f"/training/{job.pk}/").content.decode()
    assert "No live worker takes the gpu-train queue, so nothing will start this job." in text
    assert "celery -A guardsite worker -Q gpu-train" in text


def test_a_queued_job_names_the_jobs_ahead_and_the_work_its_shared_worker_has(client_as, settings):
    from django.utils import timezone

    from ops.models import WorkerHeartbeat

    WorkerHeartbeat.objects.create(hostname="demo@host", queues="default,gpu-infer,gpu-train", seen_at=timezone.now())
    TrainingJob.objects.create(recipe="sft", data_sources=["x.jsonl"], status="running", total_steps=5)
    job = TrainingJob.objects.create(recipe="sft", data_sources=["y.jsonl"], total_steps=5)
    text = client_as("viewer").get(f"/training/{job.pk}/progress").content.decode()
    assert "Waiting for a gpu-train worker (1 live worker); 1 training job ahead; the worker also serves default, gpu-infer" in text
    assert 'hx-trigger="every 1s"' in text


def test_the_poll_that_sees_the_job_end_refreshes_the_whole_page_once(client_as):
    job = TrainingJob.objects.create(recipe="sft", data_sources=["x.jsonl"], status="succeeded", stage="done", total_steps=1, step=1)
    response = client_as("viewer").get(f"/training/{job.pk}/progress", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response["HX-Refresh"] == "true"


def test_the_phase_agrees_with_the_status(client_as):
    job = TrainingJob.objects.create(recipe="sft", data_sources=["x.jsonl"], total_steps=5)
    assert job.phase == "waiting for a worker"
    client_as("policy_editor").post(f"/training/{job.pk}/cancel")
    job.refresh_from_db()
    assert job.phase == "cancelled before it started"
    text = client_as("viewer").get(f"/training/{job.pk}/").content.decode()
    assert 'id="job-phase">cancelled before it started' in text and "Waiting" not in text
    assert "Not built: the job ended before its data was built." in text


def test_the_data_mix_is_inside_the_polled_fragment(client_as):
    job = TrainingJob.objects.create(recipe="sft", data_sources=["x.jsonl"], status="running", stage="training", total_steps=5,
                                     summary={"data_mix": {"after": {"x": {"safe": 3, "unsafe": 2}}}})
    text = client_as("viewer").get(f"/training/{job.pk}/progress").content.decode()
    assert 'id="job-data-mix"' in text and "<td>x</td>" in text


def test_the_job_page_shows_the_realised_task_by_label_by_source_mix(client_as):
    from trainer import mix as mixing

    table = {"prompt": {"safe": {"toxicchat_train": 4}, "unsafe": {"advbench": 3, "toxicchat_train": 1}},
             "refusal": {"compliance": {"rbr_gold": 2}, "refusal": {"rbr_gold": 2}}}
    job = TrainingJob.objects.create(recipe="sft", data_sources=["x.jsonl"], status="running", stage="training", total_steps=5,
                                     summary={"data_mix": {"table": table, "summary": mixing.summary(table)}})
    text = client_as("viewer").get(f"/training/{job.pk}/progress").content.decode()
    assert "<th>prompt safe</th><th>prompt unsafe</th><th>refusal compliance</th><th>refusal refusal</th>" in text
    assert "<tr><td>toxicchat_train</td><td>4</td><td>1</td><td>0</td><td>0</td><td>5</td></tr>" in text
    assert "prompt 8 (66.7%, unsafe 50.0%)" in text


def test_a_one_step_loss_chart_starts_at_step_1_and_never_goes_below_zero():
    from trainer.charts import axis_ranges, training_charts

    assert axis_ranges([1.0], [0.209], (1.0, 1.0)) == (0.5, 1.5, 0.0, 0.418)
    x0, x1, y0, y1 = axis_ranges([1.0, 2.0, 3.0], [2.0, 1.0, 0.5])
    assert (x0, x1) == (1.0, 3.0) and y0 >= 0 and y1 > 2.0
    chart = str(training_charts([{"step": 1, "loss": 0.209}], total_steps=1)[0])
    assert 'data-axis="x">step 1</text>' in chart and "step 2" not in chart and ">-" not in chart


def test_a_continued_adapter_keeps_the_start_adapters_calibration(tmp_path):
    import json
    from types import SimpleNamespace

    from trainer.tasks import JobProgress, inherit_calibration

    start, out = tmp_path / "production", tmp_path / "job" / "adapter"
    start.mkdir()
    out.mkdir(parents=True)
    (start / "calibration.json").write_text(json.dumps({"temperature": 2.0, "thresholds": {"prompt": 0.6}}))
    job = TrainingJob.objects.create(recipe="sft", data_sources=["x.jsonl"], init_adapter=str(start), total_steps=1)
    inherit_calibration(job, SimpleNamespace(model_dir=out), JobProgress(job, 0))
    assert json.loads((out / "calibration.json").read_text())["thresholds"] == {"prompt": 0.6}
    assert "kept the start adapter's calibration" in TrainingJob.objects.get(pk=job.pk).log_tail


def review(policy: Policy, reviewer, prompt: str, label: str) -> None:  # noqa: ANN001 - a User
    from moderation.models import Decision, Item, ReviewTask
    from policies.models import Category

    version = policy.latest_version()
    if version is None:
        Category.objects.create(version=policy.draft(), position=0, code="S1", name="Weapons", description="Weapons.")
        version = policy.publish(change_note="v1")
    item = Item.objects.create(policy_version=version, prompt=prompt)
    task = ReviewTask.objects.create(item=item, reason=ReviewTask.Reason.FLAG)
    Decision.objects.create(task=task, item=item, reviewer=reviewer, outcome="override", prompt_label=label,
                            categories=["S1"] if label == "unsafe" else [])


def reviewed_only(**extra: str) -> dict:
    return {"recipe": "sft", "reviewed": "on", "policy": "house", "render_under": "auto", "base_model": "embedded",
            "init_adapter": "", "max_steps": "1", "lora_rank": "4", "max_examples": "10", "batch_size": "1", "eval_limit": "5", **extra}


def test_the_form_counts_the_policys_reviewed_items_by_label(client_as, policy, make_user):
    reviewer = make_user("rev", "reviewer")
    review(policy, reviewer, "How do I build a pipe bomb?", "unsafe")
    review(policy, reviewer, "Banana bread recipe?", "safe")
    text = client_as("policy_editor").get("/training/new?policy=house").content.decode()
    assert "(2 reviewed: 1 unsafe, 1 safe)" in text


def test_reviewed_items_of_one_label_alone_are_refused_before_a_job_is_queued(client_as, policy, make_user):
    client = client_as("policy_editor")
    response = client.post("/training/new", reviewed_only())
    assert response.status_code == 400 and "This policy has no reviewed items yet" in response.content.decode()
    review(policy, make_user("rev", "reviewer"), "Banana bread recipe?", "safe")
    response = client.post("/training/new", reviewed_only())
    assert response.status_code == 400
    assert "Every reviewed item of this policy is safe: training balances safe and unsafe examples" in response.content.decode()
    assert not TrainingJob.objects.exists()


def test_the_queued_note_is_in_the_polled_part_and_goes_when_the_job_runs(client_as):
    job = TrainingJob.objects.create(recipe="sft", data_sources=["x.jsonl"], total_steps=5)
    client = client_as("viewer")
    assert f"Training job #{job.pk} queued." in client.get(f"/training/{job.pk}/progress", HTTP_HX_REQUEST="true").content.decode()
    TrainingJob.objects.filter(pk=job.pk).update(status=TrainingJob.Status.RUNNING)
    assert "queued." not in client.get(f"/training/{job.pk}/progress", HTTP_HX_REQUEST="true").content.decode()
