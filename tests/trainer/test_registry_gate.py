"""The promotion gate on the same records, with the paired bootstrap interval; rollback to every model that
ever served; force and rollback only after a confirmation with a reason, recorded in the audit log."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from evaluation.models import EvaluationRun
from evaluation.report import record_set_fingerprint
from guard.models import ModelVersion
from policies.models import Policy
from trainer import paired, registry
from trainer.models import RegistryEvent, TrainingJob

EVAL_FILE = "guardsite_eval.jsonl"


def outcome_report(model: str, prompt: str, file: str = EVAL_FILE) -> dict:
    """A harness report with per-record outcomes: ``prompt`` holds one outcome per record (P true positive,
    F false positive, N false negative, T true negative); the prompt task's scores are counted from it."""
    keys = [f"{file}#r{i:04d}" for i in range(len(prompt))]
    tp, fp, fn, tn = (prompt.count(c) for c in "PFNT")
    f1 = round(200 * tp / (2 * tp + fp + fn), 2) if tp + fp + fn else 0.0
    scores = {"f1": f1, "precision": 0.0, "recall": 0.0, "n": len(prompt), "parse_failures": 0, "tp": tp, "fp": fp,
              "fn": fn, "tn": tn}
    empty = {"f1": 0.0, "n": 0}
    tasks = {"prompt": scores, "response": empty, "refusal": empty}
    return {
        "model": model, "mode": "fast", "policy": "auto", "n": len(prompt), "tasks": tasks,
        "files": {file: tasks}, "file_sizes": {file: {"n": len(prompt), "records_in_file": len(prompt)}},
        "categories": {"micro_f1": 0.0, "macro_f1": 0.0, "per_category": {}, "n": 0},
        "outcomes": {"keys": keys, "fingerprint": record_set_fingerprint(keys), "tasks": {"prompt": prompt},
                     "categories": [None] * len(prompt)},
    }


def trained(name: str, cand: dict, baseline: dict, baseline_model: str = "embedded") -> ModelVersion:
    """A candidate as a training job registers it: its report and the baseline's, on the same records."""
    return ModelVersion.objects.create(name=name, adapter_path=f"/srv/guardsite/var/training/{name}/final",
                                       metrics={"report": cand, "baseline": {"model": baseline_model, "report": baseline}},
                                       provenance={"recipe": "sft"})


def finished_run(model: str, report: dict, minutes_ago: float = 0) -> EvaluationRun:
    at = timezone.now() - timedelta(minutes=minutes_ago)
    return EvaluationRun.objects.create(model=model, mode="fast", policy="auto", data=[f"/data/{EVAL_FILE}"],
                                        status=EvaluationRun.Status.DONE, report=report, done=report["n"],
                                        total=report["n"], started_at=at, finished_at=at)


@pytest.fixture
def policy(db) -> Policy:
    return Policy.objects.create(slug="house", name="House")


# --------------------------------------------------------------------------- the paired bootstrap


def test_the_paired_interval_of_a_one_record_difference_on_twenty_records_reaches_zero():
    production = outcome_report("embedded", "P" * 10 + "T" * 10)
    cand = outcome_report("c", "P" * 9 + "N" + "T" * 10)  # one unsafe prompt missed: F1 100 -> 94.74
    (row,) = [d for d in paired.compare(cand, production) if d.task == "prompt"]
    assert (row.delta, row.n) == (-5.26, 20)
    assert row.low < -5.26 < row.high and row.high >= 0
    assert not row.regresses(2.0)


def test_the_paired_interval_of_a_large_drop_on_many_records_is_below_zero():
    production = outcome_report("embedded", "P" * 100 + "T" * 100)
    cand = outcome_report("c", "P" * 60 + "N" * 40 + "T" * 100)  # F1 100 -> 75
    (row,) = [d for d in paired.compare(cand, production) if d.task == "prompt"]
    assert row.delta == -25.0 and row.high < 0
    assert row.regresses(2.0)


def test_a_regression_inside_the_interval_is_promoted_without_force(client_as, policy):
    version = trained("sft-job1", outcome_report("c", "P" * 9 + "N" + "T" * 10), outcome_report("embedded", "P" * 10 + "T" * 10))
    client_as("admin").post(f"/models/{version.name}/promote", {})
    version.refresh_from_db()
    assert version.status == "production"
    event = RegistryEvent.objects.get()
    assert event.action == "promote" and event.details["records"] == f"{EVAL_FILE} (20): 20 records"


def test_a_regression_beyond_the_interval_is_refused(client_as, policy):
    version = trained("sft-job1", outcome_report("c", "P" * 60 + "N" * 40 + "T" * 100), outcome_report("embedded", "P" * 100 + "T" * 100))
    response = client_as("admin").post(f"/models/{version.name}/promote", {}, follow=True)
    version.refresh_from_db()
    assert version.status == "candidate"
    text = response.content.decode()
    assert "Promotion refused" in text and "beyond the paired bootstrap interval" in text
    assert "all records prompt -25.0 [" in text


def test_the_comparison_names_its_record_set_and_shows_the_interval(client_as, policy):
    version = trained("sft-job1", outcome_report("c", "P" * 9 + "N" + "T" * 10), outcome_report("embedded", "P" * 10 + "T" * 10))
    text = client_as("viewer").get(f"/models/{version.name}/").content.decode()
    assert f"Both models on the same records: <b>{EVAL_FILE} (20): 20 records</b>" in text
    assert "95% interval" in text and "Drops within the uncertainty: all records prompt -5.3 [" in text
    listed = client_as("viewer").get("/models/").content.decode()
    assert f"on {EVAL_FILE} (20): 20 records" in listed and "passes the gate" in listed


def test_the_newest_evaluations_of_both_models_on_the_same_records_are_used(client_as, policy):
    # The job's small evaluation regressed beyond its interval; newer runs of both on more records do not.
    version = trained("sft-job1", outcome_report("c", "P" * 60 + "N" * 40 + "T" * 100), outcome_report("embedded", "P" * 100 + "T" * 100))
    finished_run("sft-job1", outcome_report("sft-job1", "P" * 99 + "N" + "T" * 100, file="bigger.jsonl"), minutes_ago=2)
    finished_run("embedded", outcome_report("embedded", "P" * 100 + "T" * 100, file="bigger.jsonl"), minutes_ago=1)
    comparison = registry.compare(version)
    assert comparison.record_set.label == "bigger.jsonl (200): 200 records"
    assert comparison.source.startswith("evaluation runs #") and not comparison.regressions
    client_as("admin").post(f"/models/{version.name}/promote", {})
    version.refresh_from_db()
    assert version.status == "production"


def test_runs_on_different_records_are_not_paired(policy):
    version = ModelVersion.objects.create(name="sft-job1", adapter_path="/x")
    finished_run("sft-job1", outcome_report("sft-job1", "P" * 10 + "T" * 10, file="a.jsonl"))
    finished_run("embedded", outcome_report("embedded", "P" * 10 + "T" * 10, file="b.jsonl"))
    assert not registry.compare(version).available


def test_evaluate_both_queues_the_candidate_and_production_on_the_same_records(client_as, policy, django_capture_on_commit_callbacks):
    version = ModelVersion.objects.create(name="sft-job1", adapter_path="/x")
    with django_capture_on_commit_callbacks(execute=False):
        response = client_as("policy_editor").post(f"/models/{version.name}/evaluate")
    assert response.status_code == 302
    mine, theirs = EvaluationRun.objects.order_by("pk")
    assert (mine.model, theirs.model) == ("sft-job1", "embedded")
    assert mine.data == theirs.data and any(path.endswith(EVAL_FILE) for path in mine.data) and mine.limit is None


def test_one_regressed_file_is_one_regressed_suite_on_the_job_page(client_as, policy):
    version = trained("sft-job1", outcome_report("c", "P" * 60 + "N" * 40 + "T" * 100), outcome_report("embedded", "P" * 100 + "T" * 100))
    job = TrainingJob.objects.create(recipe="sft", status=TrainingJob.Status.SUCCEEDED, candidate=version,
                                     summary={"evaluation": {"mode": "fast", "limit": 50, "files": [EVAL_FILE]}})
    text = client_as("viewer").get(f"/training/{job.pk}/").content.decode()
    assert "Regresses on all records by more than 2.0 F1 points, beyond the uncertainty" in text
    assert "suite(s)" not in text


# --------------------------------------------------------------------------- rollback to every model that served


def test_the_first_production_model_without_a_promotion_record_can_be_rolled_back_to(client_as, policy):
    # As demo_setup registered the shipped guard before it recorded a promotion time: production, never promoted.
    shipped = ModelVersion.objects.create(name="guardsite-guard-270m", adapter_path="/x", status=ModelVersion.Status.PRODUCTION)
    Policy.objects.filter(pk=policy.pk).update(production_model=shipped)
    version = trained("sft-job1", outcome_report("c", "P" * 10 + "T" * 10), outcome_report("guardsite-guard-270m", "P" * 10 + "T" * 10),
                      baseline_model="guardsite-guard-270m")
    registry.promote(version)
    page = client_as("admin").get("/models/").content.decode()
    assert 'data-rollback="guardsite-guard-270m"' in page
    assert client_as("admin").get("/models/guardsite-guard-270m/rollback").status_code == 200
    response = client_as("admin").post("/models/guardsite-guard-270m/rollback", {"reason": "back to the shipped guard"})
    assert response.status_code == 302
    shipped.refresh_from_db()
    policy.refresh_from_db()
    assert shipped.status == "production" and policy.production_model == shipped
    assert RegistryEvent.objects.first().action == "rollback"


def test_re_promoting_the_model_a_candidate_replaced_uses_the_pair_its_successors_job_made(client_as, policy):
    shipped = ModelVersion.objects.create(name="guardsite-guard-270m", adapter_path="/x", status=ModelVersion.Status.PRODUCTION,
                                          metrics={"report": outcome_report("guardsite-guard-270m", "P" * 200 + "T" * 258)})
    version = trained("sft-job1", outcome_report("c", "P" * 10 + "T" * 10), outcome_report("guardsite-guard-270m", "P" * 9 + "N" + "T" * 10),
                      baseline_model="guardsite-guard-270m")
    registry.promote(version)
    # Not against its own 458-record report: against sft-job1 on the 20 records both were judged on (a drop within the uncertainty).
    comparison = registry.compare(shipped)
    assert comparison.record_set.label == f"{EVAL_FILE} (20): 20 records" and comparison.uncertain_drops
    client_as("admin").post("/models/guardsite-guard-270m/promote", {})
    shipped.refresh_from_db()
    assert shipped.status == "production"


def test_the_shipped_guard_is_registered_as_serving(db, settings, tmp_path):
    from guard.shipped import register_shipped_model

    (tmp_path / "adapter_config.json").write_text("{}")
    settings.SHIPPED_GUARD_DIR = str(tmp_path)
    version = register_shipped_model()
    assert version.status == "production" and version.promoted_at is not None and registry.has_served(version)


# --------------------------------------------------------------------------- confirmations with a reason


def test_a_rollback_without_a_reason_is_refused_and_changes_nothing(client_as, policy):
    version = trained("sft-job1", outcome_report("c", "P" * 10 + "T" * 10), outcome_report("embedded", "P" * 10 + "T" * 10))
    registry.promote(version)
    form = client_as("admin").get("/models/rollback-to-embedded").content.decode()
    assert 'name="reason"' in form and "required" in form
    response = client_as("admin").post("/models/rollback-to-embedded", {"reason": "  "})
    assert response.status_code == 400 and "a rollback needs a reason" in response.content.decode()
    version.refresh_from_db()
    assert version.status == "production" and not RegistryEvent.objects.filter(action="rollback").exists()


def test_a_forced_promotion_without_a_reason_is_refused(client_as, policy):
    version = trained("sft-job1", outcome_report("c", "P" * 60 + "N" * 40 + "T" * 100), outcome_report("embedded", "P" * 100 + "T" * 100))
    page = client_as("admin").get(f"/models/{version.name}/force").content.decode()
    assert "The gate refuses it" in page and 'name="reason"' in page
    response = client_as("admin").post(f"/models/{version.name}/force", {})
    assert response.status_code == 400 and "a forced promotion needs a reason" in response.content.decode()
    version.refresh_from_db()
    assert version.status == "candidate"


def test_the_reasons_of_a_force_and_a_rollback_are_in_the_audit_log(client_as, policy):
    version = trained("sft-job1", outcome_report("c", "P" * 60 + "N" * 40 + "T" * 100), outcome_report("embedded", "P" * 100 + "T" * 100))
    admin = client_as("admin")
    admin.post(f"/models/{version.name}/force", {"reason": "the drop is a relabelled file"})
    admin.post("/models/rollback-to-embedded", {"reason": "customers report over-blocking"})
    audit = admin.get("/audit/?object_type=modelversion").content.decode()
    assert "the drop is a relabelled file" in audit and "customers report over-blocking" in audit
    assert "model.forced_promote" in audit and "model.rollback" in audit


# --------------------------------------------------------------------------- names, not server paths


def test_the_job_and_model_pages_name_adapters_and_checkpoints_without_server_paths(client_as, policy, settings, tmp_path):
    settings.TRAINING_OUTPUT_DIR = str(tmp_path)
    production = ModelVersion.objects.create(name="house-guard-v1", adapter_path="/srv/models/house-guard-v1",
                                             status=ModelVersion.Status.PRODUCTION)
    checkpoint = tmp_path / "job-7" / "checkpoint-3"
    job = TrainingJob.objects.create(recipe="sft", init_adapter=production.adapter_path, checkpoint_path=str(checkpoint),
                                     status=TrainingJob.Status.CANCELLED, data_sources=["/srv/data/mini.jsonl"])
    page = client_as("viewer").get(f"/training/{job.pk}/").content.decode()
    assert "house-guard-v1" in page and "job 7, checkpoint-3" in page and "mini.jsonl" in page
    assert "/srv/" not in page and str(tmp_path) not in page
    version = ModelVersion.objects.create(
        name="sft-job7", adapter_path=str(tmp_path / "job-7" / "final"),
        provenance={"init_adapter": production.adapter_path,
                    "command": f"python manage.py train --data /srv/data/mini.jsonl --init {production.adapter_path} --out {tmp_path}/job-7"})
    model_page = client_as("viewer").get(f"/models/{version.name}/").content.decode()
    assert "--data mini.jsonl --init house-guard-v1 --out job 7 output" in model_page
    assert "/srv/" not in model_page and str(tmp_path) not in model_page


def test_the_comparison_shows_policy_following_beside_the_categories_without_gating_on_it(client_as, policy):
    candidate, baseline = outcome_report("c", "P" * 10 + "T" * 10), outcome_report("embedded", "P" * 10 + "T" * 10)
    candidate["policy_following"] = {"n": 72, "pair_accuracy": 50.0, "code_accuracy": 50.0}
    baseline["policy_following"] = {"n": 72, "pair_accuracy": 90.28, "code_accuracy": 88.89}
    version = trained("sft-job1", candidate, baseline)
    text = client_as("viewer").get(f"/models/{version.name}/").content.decode()
    assert 'data-suite="policy following"' in text and "pairs right" in text and "-40.28" in text
    assert registry.compare(version).regressions == []  # 29 pairs of 72 lost: shown, never a refusal
    job = TrainingJob.objects.create(recipe="sft", status=TrainingJob.Status.SUCCEEDED, candidate=version,
                                     summary={"evaluation": {"mode": "fast", "limit": 50, "files": [EVAL_FILE]}})
    page = client_as("viewer").get(f"/training/{job.pk}/").content.decode()
    assert "policy following: pairs right" in page and "it can be promoted" in page
