"""The model registry pages: compare with production, the promotion gate, forced promotion, rollback.

These reports predate per-record outcomes (no paired interval): the gate is the plain threshold. The paired
bootstrap gate, the record sets and the confirmations are in ``test_registry_gate.py``."""

from __future__ import annotations

import pytest

from guard.models import ModelVersion
from policies.models import Policy
from trainer import registry
from trainer.models import RegistryEvent


def task(f1: float, n: int = 20) -> dict:
    return {"f1": f1, "precision": f1, "recall": f1, "n": n, "parse_failures": 0}


def report(model: str, prompt: float, toxic: float, jbb: float, micro: float = 50.0) -> dict:
    """A report in the evaluation harness's format (two files, prompt task, categories)."""
    return {
        "model": model, "mode": "fast", "n": 40, "items_per_second": 10.0,
        "words_per_explanation": {"mean": 20.0, "p90": 30.0},
        "tasks": {"prompt": task(prompt, 40), "response": task(0.0, 0), "refusal": task(0.0, 0)},
        "files": {
            "toxicchat_train.jsonl": {"prompt": task(toxic), "response": task(0.0, 0), "refusal": task(0.0, 0)},
            "jbb_behaviors.jsonl": {"prompt": task(jbb), "response": task(0.0, 0), "refusal": task(0.0, 0)},
        },
        "categories": {"micro_f1": micro, "macro_f1": micro, "per_category": {"jbb_category:S1": {"f1": micro, "n": 10}}},
    }


def candidate(name: str, cand: dict, baseline: dict | None, baseline_model: str = "embedded") -> ModelVersion:
    metrics = {"report": cand}
    if baseline is not None:
        metrics["baseline"] = {"model": baseline_model, "report": baseline}
    return ModelVersion.objects.create(name=name, adapter_path=f"/tmp/{name}", metrics=metrics,
                                       provenance={"recipe": "sft", "data": {"files": [{"name": "jbb_behaviors.jsonl", "licence": "MIT", "used": 10, "held_out": 2}]}})


@pytest.fixture
def policy(db) -> Policy:
    return Policy.objects.create(slug="house", name="House")


def test_the_detail_page_compares_per_file_task_and_category(client_as, policy):
    version = candidate("sft-job1", report("c", 80, 70, 90, micro=60), report("embedded", 60, 65, 50, micro=40))
    page = client_as("viewer").get(f"/models/{version.name}/")
    assert page.status_code == 200
    text = page.content.decode()
    assert 'data-suite="toxicchat_train.jsonl" data-task="prompt"' in text
    assert 'data-suite="jbb_behaviors.jsonl" data-task="prompt"' in text
    assert "micro_f1" in text and "jbb_category:S1" in text
    assert "evaluated together" in text and "No regression beyond the threshold" in text
    assert "MIT" in text  # provenance: data files with their licences


def test_the_detail_page_shows_the_decision_thresholds_the_model_runs_with(client_as, policy):
    version = candidate("sft-job1", report("c", 80, 70, 90), None)
    uncalibrated = client_as("viewer").get(f"/models/{version.name}/").content.decode()
    assert "none: the most probable label wins" in uncalibrated
    version.metrics = {**version.metrics, "calibration": {"temperature": 3.0, "thresholds": {"prompt": 0.3435}}}
    version.save()
    calibrated = client_as("viewer").get(f"/models/{version.name}/").content.decode()
    assert "temperature 3.0" in calibrated and "prompt positive at P ≥ 0.344" in calibrated


def test_promotion_switches_the_policies_on_the_default_and_records_the_event(client_as, policy):
    version = candidate("sft-job1", report("c", 80, 70, 90), report("embedded", 60, 65, 50))
    response = client_as("admin").post(f"/models/{version.name}/promote", {"note": "better"})
    assert response.status_code == 302
    version.refresh_from_db()
    policy.refresh_from_db()
    assert version.status == "production" and version.promoted_at is not None
    assert policy.production_model == version
    event = RegistryEvent.objects.get()
    assert event.action == "promote" and event.previous == "embedded" and event.details["policies"] == ["house"]


def test_a_regression_on_any_suite_refuses_promotion_and_says_so_on_the_model_page(client_as, policy):
    # Better overall, but 10 points worse on ToxicChat: refused.
    version = candidate("sft-job2", report("c", 80, 55, 95), report("embedded", 70, 65, 50))
    response = client_as("admin").post(f"/models/{version.name}/promote", {}, follow=True)
    assert response.redirect_chain == [(f"/models/{version.name}/", 302)]
    text = response.content.decode()
    assert "Promotion refused" in text and "toxicchat_train.jsonl prompt -10.0" in text
    version.refresh_from_db()
    assert version.status == "candidate"
    assert RegistryEvent.objects.get().action == "refused"


def test_an_admin_can_force_a_refused_promotion_with_a_reason(client_as, policy):
    version = candidate("sft-job2", report("c", 80, 55, 95), report("embedded", 70, 65, 50))
    response = client_as("admin").post(f"/models/{version.name}/force", {"reason": "ToxicChat drop is label noise"})
    assert response.status_code == 302
    version.refresh_from_db()
    assert version.status == "production"
    event = RegistryEvent.objects.get()
    assert event.action == "forced_promote" and event.note == "ToxicChat drop is label noise"
    assert "toxicchat_train.jsonl prompt -10.0" in event.details["gate"]


def test_a_candidate_without_evaluation_needs_force(client_as, policy):
    version = candidate("sft-job3", report("c", 80, 70, 90), None)
    assert client_as("admin").post(f"/models/{version.name}/promote", {}).status_code == 302
    version.refresh_from_db()
    assert version.status == "candidate"
    assert "no evaluation of sft-job3 and embedded on the same records" in RegistryEvent.objects.get().note


def test_the_threshold_is_configurable(client_as, policy, settings):
    settings.TRAINER_PROMOTION_MAX_REGRESSION = 15.0
    version = candidate("sft-job2", report("c", 80, 55, 95), report("embedded", 70, 65, 50))
    client_as("admin").post(f"/models/{version.name}/promote", {})
    version.refresh_from_db()
    assert version.status == "production"


def test_only_admins_promote_or_roll_back(client_as, policy):
    version = candidate("sft-job1", report("c", 80, 70, 90), report("embedded", 60, 65, 50))
    assert client_as("policy_editor").post(f"/models/{version.name}/promote", {}).status_code == 403
    assert client_as("viewer").post("/models/rollback-to-embedded", {}).status_code == 403
    assert "promote-form" not in client_as("policy_editor").get(f"/models/{version.name}/").content.decode()


def test_a_candidate_evaluated_against_an_earlier_production_model_is_not_compared_on_other_records(client_as, policy):
    first = candidate("sft-job1", report("c", 80, 70, 90), report("embedded", 60, 65, 50))
    registry.promote(first)
    # Evaluated against the embedded base, not against sft-job1: sft-job1's own report is on other records.
    second = candidate("grpo-job2", report("c", 85, 60, 95), report("embedded", 60, 65, 50))
    comparison = registry.compare(second)
    assert comparison.baseline_label == "sft-job1" and not comparison.available
    text = client_as("viewer").get(f"/models/{second.name}/").content.decode()
    assert "No evaluation of grpo-job2 and sft-job1 on the same records yet" in text


def test_rollback_to_an_earlier_version_and_to_the_embedded_base(client_as, policy):
    first = candidate("sft-job1", report("c", 80, 70, 90), report("embedded", 60, 65, 50))
    registry.promote(first)
    second = candidate("grpo-job2", report("c", 90, 80, 95), report("sft-job1", 80, 70, 90), baseline_model="sft-job1")
    registry.promote(second)
    policy.refresh_from_db()
    assert policy.production_model == second
    page = client_as("admin").get("/models/").content.decode()
    assert 'data-rollback="sft-job1"' in page

    assert client_as("admin").post("/models/sft-job1/rollback", {"reason": "grpo-job2 over-blocks"}).status_code == 302
    first.refresh_from_db()
    second.refresh_from_db()
    policy.refresh_from_db()
    assert (first.status, second.status) == ("production", "retired")
    assert policy.production_model == first

    assert client_as("admin").post("/models/rollback-to-embedded", {"reason": "back to the base"}).status_code == 302
    policy.refresh_from_db()
    first.refresh_from_db()
    assert policy.production_model is None and first.status == "retired"
    assert [e.action for e in RegistryEvent.objects.order_by("pk")] == ["promote", "promote", "rollback", "rollback"]


def test_rolling_back_to_a_never_promoted_version_is_refused(client_as, policy):
    version = candidate("sft-job1", report("c", 80, 70, 90), None)
    response = client_as("admin").post(f"/models/{version.name}/rollback", {"reason": "try it"})
    assert response.status_code == 409 and b"never in production" in response.content


def test_the_list_shows_status_metrics_and_provenance(client_as, policy):
    candidate("sft-job1", report("c", 81.5, 70, 90), None)
    text = client_as("viewer").get("/models/").content.decode()
    assert 'data-model="sft-job1"' in text and "81.5" in text and "jbb_behaviors.jsonl" in text
    assert client_as("viewer").get("/models/unknown-model/").status_code == 404


def test_the_production_models_page_shows_its_evaluation_and_what_it_replaced(client_as, policy):
    version = candidate("sft-job1", report("c", 80, 70, 90), report("guardsite-guard-270m", 60, 65, 50), "guardsite-guard-270m")
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.PRODUCTION)
    text = client_as("viewer").get(f"/models/{version.name}/").content.decode()
    assert 'id="own-tasks"' in text and "toxicchat_train.jsonl" in text  # its own evaluation, per task and file
    assert "Compared with guardsite-guard-270m" in text and "No evaluation to compare" not in text


def test_a_production_model_without_a_baseline_still_shows_its_own_evaluation(client_as, policy):
    version = candidate("shipped", report("shipped", 80, 70, 90), None)
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.PRODUCTION)
    text = client_as("viewer").get(f"/models/{version.name}/").content.decode()
    assert 'id="own-tasks"' in text
    assert "This is the production model; its evaluation is above." in text


def test_the_model_page_shows_the_rank_and_layers_of_the_saved_adapter_not_stale_options(client_as, policy, tmp_path):
    import json

    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 32, "layers_to_transform": list(range(10, 18))}))
    version = ModelVersion.objects.create(name="continued", adapter_path=str(tmp_path),
                                          provenance={"recipe": "sft", "hyperparameters": {"lora_rank": 8, "lora_layers": 0}})
    text = client_as("viewer").get(f"/models/{version.name}/").content.decode()
    assert "r=16, alpha 32 on the top 8 layers (10-17)" in text
    assert "lora_rank 16" in text and "lora_layers 8" in text and "lora_rank 8" not in text
