"""Evaluation pages: start (policy editors), list with progress, detail, compare A vs B."""

from __future__ import annotations

import re

import pytest

from evaluation.harness import PolicyResolver
from evaluation.models import EvaluationRun
from evaluation.records import load_data
from evaluation.report import build_report
from guard.contract import Verdict


@pytest.fixture
def shared_datasets(settings, small_benchmark):
    settings.SHARED_DATASETS_DIR = small_benchmark
    return small_benchmark


def report_for(folder, model: str, prompt_label: str) -> dict:
    """A report in which the model answers ``prompt_label`` for every record."""
    files = load_data([folder])
    records = [r for f in files for r in f.records]
    resolver = PolicyResolver("auto")
    verdicts = [
        Verdict(prompt_label=prompt_label, response_label=prompt_label if r.has_response else None,
                refusal_label="compliance" if r.has_response else None,
                categories=["S3"] if prompt_label == "unsafe" and r.taxonomy == "jbb_category" else [],
                explanation="because it says so")
        for r in records
    ]
    return build_report(records, verdicts, [resolver.gold_codes(r) for r in records], files, model, "fast", 1.0)


def finished_run(folder, model: str, prompt_label: str) -> EvaluationRun:
    return EvaluationRun.objects.create(
        model=model, data=[str(folder)], status=EvaluationRun.Status.DONE, report=report_for(folder, model, prompt_label)
    )


def test_a_viewer_sees_the_runs_but_no_start_form(client_as, shared_datasets):
    response = client_as("viewer").get("/evaluations/")
    assert response.status_code == 200
    assert b"Start an evaluation" not in response.content


def test_a_viewer_cannot_start_a_run(client_as, shared_datasets):
    response = client_as("viewer").post("/evaluations/start/", {"data": ["prompts.jsonl"], "mode": "fast", "policy": "auto", "batch_size": 4})
    assert response.status_code == 403
    assert not EvaluationRun.objects.exists()


def test_a_policy_editor_is_offered_the_shared_benchmark_files(client_as, shared_datasets):
    response = client_as("policy_editor").get("/evaluations/")
    assert b"Start an evaluation" in response.content
    assert b"prompts.jsonl" in response.content and b"responses.jsonl" in response.content


def test_starting_a_run_queues_it_with_the_chosen_files(client_as, shared_datasets):
    client = client_as("policy_editor")
    response = client.post("/evaluations/start/", {
        "data": ["responses.jsonl"], "model": "", "mode": "reason", "policy": "auto", "limit": 2, "batch_size": 4,
    })
    run = EvaluationRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/evaluations/{run.pk}/"
    assert run.status == EvaluationRun.Status.QUEUED
    assert run.data == [str((shared_datasets / "responses.jsonl").resolve())]
    assert (run.mode, run.limit, run.batch_size, run.model) == ("reason", 2, 4, "")
    assert run.created_by.username == "policy_editor-user"


def test_starting_without_files_is_a_400_naming_the_field(client_as, shared_datasets):
    response = client_as("policy_editor").post("/evaluations/start/", {"mode": "fast", "policy": "auto", "batch_size": 4})
    assert response.status_code == 400
    assert b"Choose at least one benchmark file." in response.content
    assert not EvaluationRun.objects.exists()


def test_a_file_outside_the_shared_datasets_cannot_be_chosen(client_as, shared_datasets):
    response = client_as("policy_editor").post("/evaluations/start/", {
        "data": ["/etc/passwd"], "mode": "fast", "policy": "auto", "batch_size": 4,
    })
    assert response.status_code == 400
    assert b"Select a valid choice" in response.content


def test_an_unknown_model_or_mode_is_a_400(client_as, shared_datasets):
    client = client_as("admin")
    response = client.post("/evaluations/start/", {"data": ["prompts.jsonl"], "model": "/tmp/x", "mode": "slow", "policy": "auto", "batch_size": 4})
    assert response.status_code == 400
    assert response.content.count(b"Select a valid choice") == 2


def test_the_list_polls_while_a_run_is_active_and_shows_its_progress(client_as, shared_datasets):
    EvaluationRun.objects.create(model="", data=[], status=EvaluationRun.Status.RUNNING, done=3, total=12)
    response = client_as("viewer").get("/evaluations/", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert 'id="run-table"' in html and 'hx-trigger="every 2s"' in html
    assert "<html" not in html  # the partial only
    assert "3/12" in html and 'value="25"' in html


def test_the_list_stops_polling_when_no_run_is_active(client_as, shared_datasets):
    finished_run(shared_datasets, "model-a", "unsafe")
    response = client_as("viewer").get("/evaluations/")
    assert b"every 2s" not in response.content


def test_a_finished_run_shows_its_report_and_charts(client_as, shared_datasets):
    run = finished_run(shared_datasets, "model-a", "unsafe")
    html = client_as("viewer").get(f"/evaluations/{run.pk}/").content.decode()
    assert "prompts.jsonl" in html and "responses.jsonl" in html
    assert "<svg" in html and "F1 per task" in html
    assert "jbb_category:S3" in html
    assert "every 2s" not in html


def test_a_finished_run_lists_the_policy_following_pairs_it_missed(client_as, shared_datasets):
    run = finished_run(shared_datasets, "model-a", "unsafe")
    run.report["policy_following"] = {
        "n": 72, "pair_accuracy": 98.61, "code_accuracy": 100.0, "covering_accuracy": 98.61, "other_accuracy": 100.0,
        "parse_failures": 0, "misses": [{"id": "pf-self_promotion-0", "text": "Subscribe to my channel!", "category": "Self-promotion",
                                         "code": "S1", "other_kind": "removed", "covering": "safe", "other": "safe"}]}
    run.save()
    html = client_as("viewer").get(f"/evaluations/{run.pk}/").content.decode()
    assert "98.61% of 72 pairs right" in html
    assert 'data-pair="pf-self_promotion-0"' in html and "Subscribe to my channel!" in html and "Self-promotion (S1)" in html


def test_compare_puts_both_models_policy_following_side_by_side(client_as, shared_datasets):
    a, b = finished_run(shared_datasets, "model-a", "unsafe"), finished_run(shared_datasets, "model-b", "safe")
    for run, accuracy in ((a, 81.94), (b, 66.67)):
        run.report["policy_following"] = {"n": 72, "pair_accuracy": accuracy, "code_accuracy": 84.72, "misses": []}
        run.save()
    html = client_as("viewer").get(f"/evaluations/compare/?a={a.pk}&b={b.pk}").content.decode()
    assert "policy-following pairs right (%)" in html and "81.94" in html and "66.67" in html


def test_the_start_form_judges_the_policy_following_pairs_unless_unticked(client_as, shared_datasets):
    client = client_as("policy_editor")
    assert re.search(r'<input type="checkbox" name="policy_following"[^>]* checked>', client.get("/evaluations/").content.decode())
    form = {"data": ["prompts.jsonl"], "mode": "fast", "policy": "auto", "batch_size": 4}
    client.post("/evaluations/start/", {**form, "policy_following": "on"})
    client.post("/evaluations/start/", form)
    assert [run.policy_following for run in EvaluationRun.objects.order_by("pk")] == [True, False]


def test_polling_the_detail_of_a_run_that_finished_refreshes_the_page(client_as, shared_datasets):
    run = finished_run(shared_datasets, "model-a", "unsafe")
    response = client_as("viewer").get(f"/evaluations/{run.pk}/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="run-status")
    assert response["HX-Refresh"] == "true"


def test_a_failed_run_shows_its_error(client_as, shared_datasets):
    run = EvaluationRun.objects.create(model="x", data=[], status=EvaluationRun.Status.FAILED, error="GuardError: unknown model 'x'")
    html = client_as("viewer").get(f"/evaluations/{run.pk}/").content.decode()
    assert "unknown model" in html and "eval-failed" in html


def test_compare_puts_model_a_and_b_side_by_side_per_task_file_and_category(client_as, shared_datasets):
    a = finished_run(shared_datasets, "model-a", "unsafe")
    b = finished_run(shared_datasets, "model-b", "safe")
    response = client_as("viewer").get(f"/evaluations/compare/?a={a.pk}&b={b.pk}")
    assert response.status_code == 200
    html = response.content.decode()
    assert "model-a" in html and "model-b" in html
    # Model A says unsafe everywhere: prompt F1 = 2*4/(2*4+3) = 72.73; model B never says unsafe: 0.
    assert "72.73" in html and "-72.73" in html
    assert 'data-task="prompt"' in html and 'data-task="response"' in html
    assert "jbb_category:S3" in html
    assert html.count("<svg") >= 3


def test_compare_of_an_unfinished_run_explains_why(client_as, shared_datasets):
    a = finished_run(shared_datasets, "model-a", "unsafe")
    b = EvaluationRun.objects.create(model="", data=[], status=EvaluationRun.Status.RUNNING)
    response = client_as("viewer").get(f"/evaluations/compare/?a={a.pk}&b={b.pk}")
    assert response.status_code == 400
    assert b"has no report yet" in response.content


def test_compare_of_a_missing_run_is_a_404(client_as, shared_datasets):
    a = finished_run(shared_datasets, "model-a", "unsafe")
    response = client_as("viewer").get(f"/evaluations/compare/?a={a.pk}&b=99999")
    assert response.status_code == 404
    assert b"No evaluation run #99999" in response.content


def test_compare_with_a_non_numeric_run_is_a_400(client_as, shared_datasets):
    response = client_as("viewer").get("/evaluations/compare/?a=x&b=2")
    assert response.status_code == 400


def test_the_shipped_evaluation_set_is_offered_and_preselected_without_any_shared_corpus(client_as, settings, tmp_path):
    settings.SHARED_DATASETS_DIR = tmp_path / "absent"
    text = client_as("policy_editor").get("/evaluations/").content.decode()
    assert "guardsite_eval.jsonl (57 records, shipped with Guardsite)" in text
    assert 'name="data" value="guardsite_eval.jsonl" id="id_data_0" checked>' in text


def test_a_run_on_the_shipped_set_is_queued_with_its_path(client_as, settings, tmp_path):
    from evaluation.datasets import SHIPPED_DATA_DIR

    settings.SHARED_DATASETS_DIR = tmp_path / "absent"
    response = client_as("policy_editor").post("/evaluations/start/", {
        "data": ["guardsite_eval.jsonl"], "model": "", "mode": "fast", "policy": "auto", "limit": 5, "batch_size": 4,
    })
    assert response.status_code == 302
    assert EvaluationRun.objects.get().data == [str((SHIPPED_DATA_DIR / "guardsite_eval.jsonl").resolve())]


def test_the_shipped_set_reads_under_its_own_taxonomy_with_every_category_of_the_general_policy():
    from evaluation.datasets import shipped_files

    files = load_data(shipped_files())
    records = [r for f in files for r in f.records]
    resolver = PolicyResolver("auto")
    codes = {code for r in records for code in resolver.gold_codes(r)[1]}
    assert len(records) == 57 and codes == {f"S{i}" for i in range(1, 9)}
    assert {r.stratum for r in records} >= {("unsafe", None, None), ("safe", None, None), ("unsafe", "unsafe", "compliance"),
                                          ("unsafe", "safe", "refusal"), ("safe", "safe", "compliance"), ("safe", "safe", "refusal")}
